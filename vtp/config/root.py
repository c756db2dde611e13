"""The whole configuration: one field per section, and the cross-field checks no single section can express."""
from __future__ import annotations

from pathlib import Path

from pydantic import model_validator

from vtp.config.base import Section, fail
from vtp.config.data import AugConfig, DataConfig
from vtp.config.eval import EvalConfig
from vtp.config.gan import GanConfig
from vtp.config.generation import DiTConfig, GenEvalConfig, JudgeConfig, LatentsConfig, SampleConfig
from vtp.config.loss import LossConfig
from vtp.config.model import ModelConfig
from vtp.config.train import TrainConfig
from vtp.models.registry import DIT_SIZES, SIZES


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
    latents: LatentsConfig = LatentsConfig()
    dit: DiTConfig = DiTConfig()
    sample: SampleConfig = SampleConfig()
    judge: JudgeConfig = JudgeConfig()
    gen_eval: GenEvalConfig = GenEvalConfig()

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


def check_combinations(cfg: Config) -> None:
    if cfg.model.size not in SIZES:
        fail("model.size", cfg.model.size, f"unknown size; allowed: {', '.join(sorted(SIZES))}")
    try:
        spec = cfg.model.spec()
    except TypeError as e:  # an unknown ViTSpec field in model.encoder / model.decoder
        fail("model.encoder/decoder", {**cfg.model.encoder, **cfg.model.decoder}, f"{e}")
    res = cfg.data.resolution
    if res % spec.patch:
        fail("model.patch", spec.patch, f"must divide data.resolution = {res}; allowed: "
             + ", ".join(str(p) for p in range(1, res + 1) if res % p == 0 and p <= 64))
    for name in ("global_crop_size", "local_crop_size"):
        size = getattr(cfg.aug, name)
        if size % spec.patch:
            fail(f"aug.{name}", size, f"must be a multiple of the patch size {spec.patch}")
    if cfg.aug.global_crop_size > res:
        fail("aug.global_crop_size", cfg.aug.global_crop_size, f"must not exceed data.resolution = {res}")
    for tower in ("encoder", "decoder"):
        vit = getattr(spec, tower)
        if vit.width % vit.heads:
            fail(f"model.{tower}.heads", vit.heads, f"must divide the width {vit.width}")
        multiple = 2 if vit.rope == "vitok-1d" else 4  # a 1D RoPE rotates pairs; a 2D one pairs per axis
        if vit.head_dim % multiple:
            fail(f"model.{tower}.heads", vit.heads,
                 f"head dim {vit.head_dim} must be a multiple of {multiple} ({vit.rope} RoPE)")
    if spec.bottleneck_dim > spec.encoder.width:
        fail("model.bottleneck_dim", spec.bottleneck_dim, f"must not exceed the encoder width {spec.encoder.width}")
    if not cfg.loss.enabled:
        fail("loss", "clip/ssl/rec all false", "enable at least one objective")
    if cfg.loss.clip and spec.text is None:
        fail("loss.clip", True, f"size {spec.name!r} has no text tower; set loss.clip: false")
    if cfg.loss.ssl and (spec.dino is None or not spec.cls_token):
        fail("loss.ssl", True, f"size {spec.name!r} has no DINO head/CLS token; set loss.ssl: false")
    for k, n in cfg.batch_subsets().items():
        if n < 1:
            fail("loss.batch_ratio", list(cfg.loss.batch_ratio), f"gives the {k} subset less than one image of "
                 f"train.batch_size = {cfg.train.batch_size}; raise the batch or that objective's share")
    if cfg.dit.size not in DIT_SIZES:
        fail("dit.size", cfg.dit.size, f"unknown DiT size; allowed: {', '.join(sorted(DIT_SIZES))}")
    channels, side, _ = spec.latent_shape(res)
    if side % DIT_SIZES[cfg.dit.size].patch:
        fail("dit.size", cfg.dit.size, f"its patch {DIT_SIZES[cfg.dit.size].patch} must divide the tokenizer's "
             f"latent grid {side}x{side} (model.size {spec.name!r} patch {spec.patch} at data.resolution {res}); "
             f"choose a /1 size or another resolution")
    if cfg.eval.kid_subset_size > cfg.eval.num_samples:
        fail("eval.kid_subset_size", cfg.eval.kid_subset_size, f"must not exceed eval.num_samples = "
             f"{cfg.eval.num_samples}")


def to_dict(cfg: Config) -> dict:
    return cfg.model_dump(mode="json")
