"""The compute convention: model FLOPs apart from the loss networks, the estimate held to the engine's count, and
equal-compute steps derived by the platform."""
from __future__ import annotations

import pytest
import yaml

from vtp.config import ConfigError, load_config
from vtp.train.compute import equal_compute_steps, pretrain_step_flops
from vtp.train.pretrain import run_pretrain

from train_utils import REPO, tiny_config, tiny_loader

# Under accumulation every micro-batch draws rows of every subset here: one that draws none runs a weightless
# placeholder row (one graph for DDP), which the estimate does not count.
MIXES = {"ae": ["loss.clip=false", "loss.ssl=false"], "vtp": [],
         "vtp-accum": ["train.grad_accum=2", "loss.batch_ratio=[8,8,8]"],
         "vtp-drop-path": ["model.drop_path.clip=0.25", "model.drop_path.ssl=0.25", "model.drop_path.rec=0.25"]}


@pytest.mark.parametrize("mix", MIXES)
def test_the_estimate_matches_the_engines_count_of_the_model(tmp_path, mix):
    cfg = tiny_config(tmp_path, "vtp", *MIXES[mix], steps=2)
    m = run_pretrain(cfg, resume=False, loader=tiny_loader(cfg))
    assert m["loss_network_flops_per_step"] > 0  # LPIPS, counted apart
    assert m["model_flops_per_step"] == pytest.approx(m["flops_per_step"] - m["loss_network_flops_per_step"])
    assert m["model_total_flops"] == pytest.approx(m["model_flops_per_step"] * 2)
    # The estimate counts backward as 2 forwards everywhere (the real step skips the patch embedding's input
    # gradient; attention's backward is 2.5 forwards), so it may differ by a percent or two — not more, for any
    # mix: equal compute between mixes rests on it.
    ratio = pretrain_step_flops(cfg)["total"] / m["model_flops_per_step"]
    assert 0.98 <= ratio < 1.02, ratio


def test_the_engine_counts_attention_on_cpu():
    # torch's counter registers only the CUDA attention kernels; vtp.models.flops adds the CPU one.
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    from vtp.models.flops import FlopCounterMode

    q = torch.randn(2, 3, 17, 8, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        F.scaled_dot_product_attention(q, q, q).sum().backward()
    shape = tuple(q.shape)
    assert counter.get_total_flops() == sdpa_flop_count(shape, shape, shape) + sdpa_backward_flop_count(
        shape, shape, shape, shape) > 0


def test_without_reconstruction_nothing_is_a_loss_network(tmp_path):
    cfg = tiny_config(tmp_path, "vtp", "loss.rec=false", steps=2)
    m = run_pretrain(cfg, resume=False, loader=tiny_loader(cfg))
    assert m["loss_network_flops_per_step"] == 0 and m["model_flops_per_step"] == m["flops_per_step"]


def _params(tmp_path, configs: dict) -> str:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["configs"] = configs
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_equal_compute_steps_are_derived_and_ignore_the_loss_network(tmp_path):
    params = _params(tmp_path, {"full": {}, "ae": {"loss": {"clip": False, "ssl": False},
                                                   "train": {"equal_compute_with": "full"}}})
    full, ae = load_config("full", (), params), load_config("ae", (), params)
    assert ae.train.steps == equal_compute_steps(ae, full) > full.train.steps  # an AE step is cheaper
    spent = pretrain_step_flops(ae)["total"] * ae.train.steps
    assert spent == pytest.approx(pretrain_step_flops(full)["total"] * full.train.steps, rel=1 / ae.train.steps)
    # LPIPS is not tokenizer compute: a costlier loss network changes no derived budget.
    vgg = load_config("ae", ("loss.lpips_net=vgg",), params)
    assert vgg.train.steps == ae.train.steps


def test_equal_compute_errors_name_the_field(tmp_path):
    params = _params(tmp_path, {"full": {}, "both": {"train": {"equal_compute_with": "full", "steps": 100}},
                                "lost": {"train": {"equal_compute_with": "nowhere"}},
                                "chain": {"train": {"equal_compute_with": "lost"}}})
    with pytest.raises(ConfigError, match="train.steps and train.equal_compute_with are both set"):
        load_config("both", (), params)
    with pytest.raises(ConfigError, match=r"train.equal_compute_with = 'nowhere': unknown configuration"):
        load_config("lost", (), params)
    with pytest.raises(ConfigError, match="which itself derives its steps"):
        load_config("chain", (), params)
    # An explicit --set train.steps wins (a quick smoke run), and the resolved config no longer claims equality.
    quick = load_config("lost", ("train.steps=50",), params)
    assert quick.train.steps == 50 and quick.train.equal_compute_with is None


def test_a_derived_configurations_warmup_is_checked_against_its_derived_steps(tmp_path):
    # The base's 300 steps are not this configuration's: a warm-up above them is fine once steps are derived
    # (the reference runs 2000), and a warm-up above the derived steps is still refused.
    params = _params(tmp_path, {"full": {"train": {"steps": 2000, "warmup_steps": 500}},
                                "ae": {"loss": {"clip": False, "ssl": False},
                                       "train": {"equal_compute_with": "full", "warmup_steps": 500}},
                                "long": {"loss": {"clip": False, "ssl": False},
                                         "train": {"equal_compute_with": "full", "warmup_steps": 10 ** 6}}})
    ae = load_config("ae", (), params)
    assert ae.train.warmup_steps == 500 < 2000 < ae.train.steps
    with pytest.raises(ConfigError, match=r"config 'long': train.warmup_steps = 1000000: must be smaller than steps"):
        load_config("long", (), params)
