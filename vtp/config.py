"""Typed, frozen configuration loaded from `params.yaml`.

`params.yaml` holds a base configuration plus a `configs:` mapping of named scaling configurations, each a
partial override of the base. `load_config(name)` merges base <- configs[name] <- `--set` overrides and
validates everything before any work starts; every error is one line naming the field, the value and what
is allowed (`ConfigError`).
"""
from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vtp.models.registry import SIZES, TokenizerSpec, get_spec, with_overrides

DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(ValueError):
    """A configuration problem, reported before any work starts (CLI exit code 2)."""


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(Section):
    dataset: str = "synthetic"  # folder under `root` holding {train,val}-NNNNNN.tar + manifest.json
    root: str = "data/shards"
    resolution: int = Field(64, ge=8, le=4096)
    synthetic_train: int = Field(8192, ge=1)  # images the `synthetic` source generates per split
    synthetic_val: int = Field(1024, ge=1)
    shard_size: int = Field(1000, ge=1)
    shuffle_buffer: int = Field(2000, ge=0)
    loader_workers: int = Field(0, ge=0)
    val_fraction: float = Field(0.05, ge=0.0, lt=1.0)  # folder/pairs/shards sources: split by image hash
    image_format: Literal["png", "jpg"] = "png"  # how ingest stores images in the shards
    jpeg_quality: int = Field(95, ge=1, le=100)
    max_image_pixels: int = Field(89_478_485, ge=1)  # larger inputs are skipped as decompression bombs (PIL's limit)
    caption_template: str = "a photo of a {label}."  # folder source: caption of an image without a .txt beside it


class AugConfig(Section):
    """DINOv2 multi-crop and iBOT block masking (sizes in pixels; scales are area fractions)."""
    global_crop_size: int = Field(64, ge=8)
    local_crop_size: int = Field(32, ge=8)
    local_crops: int = Field(4, ge=0)
    global_crop_scale: tuple[float, float] = (0.32, 1.0)
    local_crop_scale: tuple[float, float] = (0.05, 0.32)
    mask_probability: float = Field(0.5, ge=0.0, le=1.0)
    mask_ratio: tuple[float, float] = (0.1, 0.5)
    hflip: bool = True
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect-ratio range of RandomResizedCrop-style crops
    mask_min_block: int = Field(4, ge=1)  # smallest masked block, in patches (DINOv2's min_num_patches)

    @model_validator(mode="after")
    def _ranges(self):
        for name in ("global_crop_scale", "local_crop_scale", "mask_ratio"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi <= 1.0:
                _fail(name, [lo, hi], "need 0 <= min <= max <= 1")
        if not 0.0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            _fail("crop_ratio", list(self.crop_ratio), "need 0 < min <= max")
        return self


class DropPath(Section):
    clip: float = Field(0.1, ge=0.0, lt=1.0)
    ssl: float = Field(0.1, ge=0.0, lt=1.0)
    rec: float = Field(0.0, ge=0.0, lt=1.0)


class ModelConfig(Section):
    size: str = "vtp-cpu-s"
    patch: int | None = Field(None, ge=1)
    bottleneck_dim: int | None = Field(None, ge=1)
    variational: bool | None = None
    encoder: dict[str, Any] = {}  # ViTSpec field overrides, e.g. {depth: 6, width: 256}
    decoder: dict[str, Any] = {}
    bottleneck_ae_only: bool = True  # semantic heads read full-width features (released VTP) or the latent
    clip_feature: Literal["cls", "pooled"] = "cls"
    drop_path: DropPath = DropPath()
    grad_checkpointing: bool = False

    def spec(self) -> TokenizerSpec:
        return resolve_spec(self)


class DinoLossConfig(Section):
    student_temp: float = Field(0.1, gt=0)
    teacher_temp: float = Field(0.07, gt=0)
    teacher_temp_warmup: float = Field(0.04, gt=0)  # linear ramp to teacher_temp over warmup_fraction
    warmup_fraction: float = Field(0.3, ge=0, le=1)
    centering: Literal["sinkhorn", "softmax"] = "sinkhorn"
    center_momentum: float = Field(0.9, ge=0, le=1)
    ibot_weight: float = Field(1.0, ge=0)
    koleo_weight: float = Field(0.0, ge=0)


class LossConfig(Section):
    clip: bool = True
    ssl: bool = True
    rec: bool = True
    weight_clip: float = Field(1.0, ge=0)
    weight_ssl: float = Field(1.0, ge=0)
    weight_rec: float = Field(0.1, ge=0)
    lpips_weight: float = Field(1.0, ge=0)  # L_rec = L1 + lpips_weight * LPIPS
    lpips_net: Literal["vgg", "alex"] = "vgg"
    lpips_weights: str | None = None  # file (safetensors or torchvision .pth); default: vtp.weights' search order
    kl_weight: float = Field(1e-3, ge=0)  # only for a variational (ViTok) bottleneck
    batch_ratio: tuple[float, float, float] = (8, 2, 1)  # clip : ssl : rec subsets of one batch
    dino: DinoLossConfig = DinoLossConfig()

    @property
    def enabled(self) -> tuple[str, ...]:
        return tuple(o for o in ("clip", "ssl", "rec") if getattr(self, o))


class GanConfig(Section):
    """Stage 2 (`--stage decoder-gan`): frozen encoder, decoder fine-tuned with L1 + LPIPS + hinge GAN."""
    steps: int = Field(200, ge=1)
    weight: float = Field(0.05, ge=0)  # ViTok App. A.2's best generator GAN weight
    disc_lr: float = Field(2e-5, gt=0)
    lr: float = Field(5e-5, gt=0)
    start_step: int = Field(50, ge=0)  # generator adversarial term off before this step
    warmup_steps: int = Field(50, ge=0)  # then ramped linearly to `weight`
    disc_width: int = Field(64, ge=8)
    disc_blocks: int = Field(3, ge=1)


class TrainConfig(Section):
    steps: int = Field(300, ge=1)
    batch_size: int = Field(64, ge=1)  # global images per optimizer step, all ranks and accumulation included
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(1e-3, gt=0)
    min_lr: float = Field(1e-5, ge=0)
    warmup_steps: int = Field(30, ge=0)
    weight_decay: float = Field(0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = Field(1.0, ge=0)  # 0 disables
    ema_momentum: tuple[float, float] = (0.992, 1.0)  # cosine ramp of the EMA teacher's momentum
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    compile: bool = False
    fsdp: bool = False
    checkpoint_every: int = Field(100, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(10, ge=1)
    image_every: int = Field(100, ge=1)
    nan_policy: Literal["stop", "skip"] = "stop"
    peak_tflops: float | None = Field(None, gt=0)  # declared device peak for MFU; None = measured matmul peak
    deterministic: bool = True

    @model_validator(mode="after")
    def _schedule(self):
        if self.min_lr > self.lr:
            _fail("min_lr", self.min_lr, f"must not exceed lr = {self.lr}")
        if self.warmup_steps >= self.steps:
            _fail("warmup_steps", self.warmup_steps, f"must be smaller than steps = {self.steps}")
        if self.batch_size % self.grad_accum:
            _fail("batch_size", self.batch_size, f"must be a multiple of grad_accum = {self.grad_accum}")
        return self


class EvalConfig(Section):
    num_samples: int = Field(1024, ge=2)
    batch_size: int = Field(64, ge=1)
    feature_space: Literal["effnetlite0", "inception"] = "effnetlite0"
    inception_weights: str | None = None  # file; default: torch-fidelity's file in $TORCH_HOME
    kid_subset_size: int = Field(100, ge=2)
    label: str = "shape"  # which label set classifies (zero-shot, linear probe)
    probe_lrs: tuple[float, ...] = Field((1e-3, 1e-2, 1e-1), min_length=1)  # swept; chosen on the holdout
    probe_epochs: int = Field(30, ge=1)
    grid_images: int = Field(16, ge=1)
    zeroshot_templates: Literal["shapes", "openai_imagenet", "simple_imagenet"] = "shapes"  # vtp.eval.zeroshot
    probe_train_samples: int = Field(4096, ge=10)  # train-split images whose features fit the probes
    probe_holdout: float = Field(0.2, gt=0, lt=1)  # share of those that selects the learning rate
    probe_batch_size: int = Field(256, ge=1)
    probe_weight_decay: float = Field(1e-4, ge=0)

    @model_validator(mode="after")
    def _positive_lrs(self):
        if any(lr <= 0 for lr in self.probe_lrs):
            _fail("probe_lrs", list(self.probe_lrs), "every learning rate must be > 0")
        return self


class Config(Section):
    name: str = "base"
    seed: int = 0
    runs_root: str = "runs"
    data: DataConfig = DataConfig()
    aug: AugConfig = AugConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    gan: GanConfig = GanConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _combinations(self):
        check_combinations(self)
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_root) / self.name

    @property
    def shard_dir(self) -> Path:
        return Path(self.data.root) / self.data.dataset

    def batch_subsets(self) -> dict[str, int]:
        """Global sizes of the CLIP / SSL / reconstruction subsets of one batch (paper ratio 8:2:1)."""
        r_clip, r_ssl, r_rec = self.loss.batch_ratio
        top = max(r for r, on in zip(self.loss.batch_ratio, (self.loss.clip, self.loss.ssl, self.loss.rec)) if on)
        sizes = {"clip": r_clip, "ssl": r_ssl, "rec": r_rec}
        return {k: round(self.train.batch_size * r / top) for k, r in sizes.items() if getattr(self.loss, k)}


def resolve_spec(model: ModelConfig) -> TokenizerSpec:
    spec = get_spec(model.size)
    return with_overrides(spec, encoder=model.encoder, decoder=model.decoder, patch=model.patch,
                          bottleneck_dim=model.bottleneck_dim, variational=model.variational)


def _fail(field: str, value: Any, allowed: str) -> None:
    raise ValueError(f"__field__{field}__ = {value!r}: {allowed}")


def check_combinations(cfg: Config) -> None:
    """Cross-field checks that no single field can express."""
    if cfg.model.size not in SIZES:
        _fail("model.size", cfg.model.size, f"unknown size; allowed: {', '.join(sorted(SIZES))}")
    try:
        spec = cfg.model.spec()
    except TypeError as e:  # an unknown ViTSpec field in model.encoder / model.decoder
        _fail("model.encoder/decoder", {**cfg.model.encoder, **cfg.model.decoder}, f"{e}")
    res = cfg.data.resolution
    if res % spec.patch:
        _fail("model.patch", spec.patch, f"must divide data.resolution = {res}; allowed: "
              + ", ".join(str(p) for p in range(1, res + 1) if res % p == 0 and p <= 64))
    for name in ("global_crop_size", "local_crop_size"):
        size = getattr(cfg.aug, name)
        if size % spec.patch:
            _fail(f"aug.{name}", size, f"must be a multiple of the patch size {spec.patch}")
    if cfg.aug.global_crop_size > res:
        _fail("aug.global_crop_size", cfg.aug.global_crop_size, f"must not exceed data.resolution = {res}")
    for tower in ("encoder", "decoder"):
        vit = getattr(spec, tower)
        if vit.width % vit.heads:
            _fail(f"model.{tower}.heads", vit.heads, f"must divide the width {vit.width}")
        if vit.head_dim % 4:
            _fail(f"model.{tower}.heads", vit.heads, f"head dim {vit.head_dim} must be a multiple of 4 (2D RoPE)")
    if spec.bottleneck_dim > spec.encoder.width:
        _fail("model.bottleneck_dim", spec.bottleneck_dim, f"must not exceed the encoder width {spec.encoder.width}")
    if not cfg.loss.enabled:
        _fail("loss", "clip/ssl/rec all false", "enable at least one objective")
    if cfg.loss.clip and spec.text is None:
        _fail("loss.clip", True, f"size {spec.name!r} has no text tower; set loss.clip: false")
    if cfg.loss.ssl and (spec.dino is None or not spec.cls_token):
        _fail("loss.ssl", True, f"size {spec.name!r} has no DINO head/CLS token; set loss.ssl: false")
    for k, n in cfg.batch_subsets().items():
        if n < 1:
            _fail("loss.batch_ratio", list(cfg.loss.batch_ratio), f"gives the {k} subset less than one image of "
                  f"train.batch_size = {cfg.train.batch_size}; raise the batch or that objective's share")
    if cfg.eval.kid_subset_size > cfg.eval.num_samples:
        _fail("eval.kid_subset_size", cfg.eval.kid_subset_size, f"must not exceed eval.num_samples = "
              f"{cfg.eval.num_samples}")


def _format(err: ValidationError, name: str) -> str:
    e = err.errors()[0]
    msg = e["msg"].removeprefix("Value error, ")
    if msg.startswith("__field__"):  # raised by _fail: names the field relative to the failing section
        field, rest = msg[len("__field__"):].split("__", 1)
        return f"config {name!r}: {'.'.join([*map(str, e['loc']), field])}{rest}"
    loc = ".".join(str(p) for p in e["loc"])
    if e["type"] == "extra_forbidden":
        parent = _section_at(e["loc"][:-1])
        allowed = ", ".join(parent.model_fields) if parent else "?"
        return f"config {name!r}: {loc}: unknown key; allowed keys: {allowed}"
    return f"config {name!r}: {loc} = {e.get('input')!r}: {msg}"


def _section_at(loc: tuple) -> type[BaseModel] | None:
    cls: type[BaseModel] = Config
    for part in loc:
        field = cls.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        cls = field.annotation
    return cls


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key.path=value")
    key, raw = item.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw)


@functools.lru_cache(maxsize=8)
def _read_params(path: str, mtime: float) -> dict:
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return raw


def read_params(path: str | Path = DEFAULT_PARAMS) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: parameters file not found (run from the repository root or pass --params)")
    try:
        return copy.deepcopy(_read_params(str(path), path.stat().st_mtime))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None


def config_names(path: str | Path = DEFAULT_PARAMS) -> list[str]:
    return list((read_params(path).get("configs") or {}).keys())


def load_config(name: str | None = None, overrides: tuple[str, ...] | list[str] = (),
                params: str | Path = DEFAULT_PARAMS) -> Config:
    raw = read_params(params)
    configs = raw.pop("configs", None) or {}
    if name is not None and name != "base":
        if name not in configs:
            raise ConfigError(f"--config {name!r}: unknown configuration; choose from: "
                              f"{', '.join(['base', *configs]) }")
        if not isinstance(configs[name], dict):
            raise ConfigError(f"configs.{name}: must be a mapping of overrides")
        raw = deep_merge(raw, configs[name])
    raw["name"] = name or raw.get("name", "base")
    for item in overrides:
        keys, value = parse_override(item)
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {k} is not a section")
        node[keys[-1]] = value
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format(e, raw["name"])) from None


def to_dict(cfg: Config) -> dict:
    return cfg.model_dump(mode="json")
