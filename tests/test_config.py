"""Configuration: every bad value fails before any work with one line naming field, value and what is allowed."""
from __future__ import annotations

import pytest
import yaml

from vtp.config import Config, ConfigError, config_names, load_config
from vtp.models.registry import SIZES


def write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_repository_configs_resolve(params_file):
    names = config_names(params_file)
    assert {"ae", "vtp"} <= set(names)
    ae, vtp = (load_config(n, params=params_file) for n in ("ae", "vtp"))
    assert ae.loss.enabled == ("rec",) and vtp.loss.enabled == ("clip", "ssl", "rec")
    assert ae.name == "ae" and ae.run_dir.name == "ae"


def test_named_config_overrides_only_what_it_names(params_file):
    raw = yaml.safe_load(params_file.read_text())
    raw["configs"]["small"] = {"train": {"steps": 70}}
    write(params_file, raw)
    cfg = load_config("small", params=params_file)
    assert cfg.train.steps == 70
    assert cfg.train.lr == raw["train"]["lr"]  # untouched base value survives the deep merge


def test_set_overrides_parse_yaml_values(params_file):
    cfg = load_config("vtp", ["train.steps=120", "loss.batch_ratio=[4,2,1]", "model.encoder.depth=2"], params_file)
    assert cfg.train.steps == 120 and cfg.loss.batch_ratio == (4, 2, 1) and cfg.model.spec().encoder.depth == 2


def test_configs_are_frozen(params_file):
    cfg = load_config("vtp", params=params_file)
    with pytest.raises(Exception):
        cfg.train.steps = 5


@pytest.mark.parametrize("override, field, hint", [
    ("model.patch=15", "model.patch", "must divide data.resolution = 32"),
    ("model.encoder.heads=5", "model.encoder.heads", "must divide the width"),
    ("model.bottleneck_dim=4096", "model.bottleneck_dim", "must not exceed the encoder width"),
    ("model.size=vtp-xxl", "model.size", "allowed: "),
    ("model.nosuch=1", "model.nosuch", "allowed keys: size"),
    ("train.steps=abc", "train.steps", "valid integer"),
    ("train.lr=-1", "train.lr", "greater than 0"),
    ("train.warmup_steps=1000", "train.warmup_steps", "smaller than steps"),
    ("loss.dino.centering=mean", "loss.dino.centering", "'sinkhorn' or 'softmax'"),
    ("aug.mask_ratio=[0.6,0.2]", "aug.mask_ratio", "min <= max"),
    ("aug.local_crop_size=20", "aug.local_crop_size", "multiple of the patch size 8"),
    ("loss.batch_ratio=[256,2,1]", "loss.batch_ratio", "less than one image"),
    ("eval.kid_subset_size=5000", "eval.kid_subset_size", "must not exceed eval.num_samples"),
    ("dit.size=dit-huge", "dit.size", "allowed: dit-1p0b/1"),
    ("dit.warmup_steps=5000", "dit.warmup_steps", "smaller than steps"),
    ("sample.cfg_interval=[0.8,0.2]", "sample.cfg_interval", "lo <= hi"),
    ("sample.solver=rk4", "sample.solver", "'euler', 'heun' or 'dopri5'"),
])
def test_bad_values_name_the_field(params_file, override, field, hint):
    with pytest.raises(ConfigError) as err:
        load_config("vtp", [override], params_file)
    msg = str(err.value)
    assert "\n" not in msg and field in msg and hint in msg, msg


def test_dit_patch_must_divide_the_tokenizers_latent_grid(params_file):
    with pytest.raises(ConfigError) as err:
        load_config("vtp", ["data.resolution=40", "aug.global_crop_size=40", "dit.size=dit-b/2"], params_file)
    msg = str(err.value)
    assert "dit.size = 'dit-b/2'" in msg and "latent grid 5x5" in msg and "model.size 'vtp-cpu-s'" in msg, msg


def test_impossible_objective_combinations(params_file):
    with pytest.raises(ConfigError, match="enable at least one objective"):
        load_config("vtp", ["loss.clip=false", "loss.ssl=false", "loss.rec=false"], params_file)
    with pytest.raises(ConfigError, match="no text tower"):  # ViTok sizes have no text tower
        load_config("vtp", ["model.size=vitok-s-b/16"], params_file)


def test_unknown_config_name_lists_choices(params_file):
    with pytest.raises(ConfigError, match=r"unknown configuration; choose from: base, ae, vtp"):
        load_config("nosuch", params=params_file)


def test_unknown_top_level_key(params_file):
    raw = yaml.safe_load(params_file.read_text())
    raw["trian"] = {"steps": 3}
    write(params_file, raw)
    with pytest.raises(ConfigError, match=r"trian: unknown key; allowed keys: name, seed"):
        load_config("vtp", params=params_file)


def test_batch_subsets_follow_the_ratio():
    cfg = Config.model_validate({"train": {"batch_size": 64}})
    assert cfg.batch_subsets() == {"clip": 64, "ssl": 16, "rec": 8}
    ae = Config.model_validate({"train": {"batch_size": 64}, "loss": {"clip": False, "ssl": False}})
    assert ae.batch_subsets() == {"rec": 64}  # the largest enabled objective takes the whole batch


def test_every_registered_size_validates_at_its_native_resolution():
    for name, spec in SIZES.items():
        res = spec.patch * 16
        cfg = {"model": {"size": name}, "data": {"resolution": res},
               "aug": {"global_crop_size": res, "local_crop_size": spec.patch * 4},
               "loss": {"clip": spec.text is not None, "ssl": spec.dino is not None}}
        assert Config.model_validate(cfg).model.spec() == spec


def test_head_dim_rule_follows_the_rope_style(params_file):
    """2D RoPE pairs channels per axis (head dim % 4); ViTok's 1D RoPE rotates pairs only (head dim % 2)."""
    with pytest.raises(ConfigError, match=r"head dim 6 must be a multiple of 4 \(dinov3-2d RoPE\)"):
        load_config("vtp", ["model.encoder.heads=32"], params_file)
    cfg = load_config("vtp", ["model.encoder.heads=32", "model.encoder.rope=vitok-1d"], params_file)
    assert cfg.model.encoder == {"heads": 32, "rope": "vitok-1d"}
