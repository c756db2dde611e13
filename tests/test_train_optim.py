"""Optimizer groups and schedules."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vtp.train.optim import build_optimizer, ema_momentum_at, lr_at, param_groups, teacher_temp_at


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
        self.logit_scale = nn.Parameter(torch.ones(()))
        self.linear = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)


def test_no_weight_decay_on_norms_biases_tokens_and_temperature():
    m = Toy()
    decay, no_decay = param_groups(m, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert [id(p) for p in decay["params"]] == [id(m.linear.weight)]
    assert {id(p) for p in no_decay["params"]} == {id(m.cls_token), id(m.logit_scale), id(m.linear.bias),
                                                   id(m.norm.weight), id(m.norm.bias)}


def test_optimizer_uses_configured_betas():
    opt = build_optimizer(Toy(), lr=1e-3, betas=(0.5, 0.9), weight_decay=0.1)
    assert opt.param_groups[0]["betas"] == (0.5, 0.9) and opt.param_groups[0]["weight_decay"] == 0.1
    assert opt.param_groups[1]["weight_decay"] == 0.0
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(nn.Linear(2, 2).requires_grad_(False), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.0)


def test_cpu_optimizer_is_fused_and_steps_like_the_reference_adamw():
    """The fused kernel on CPU gives torch's reference (for-loop) AdamW updates, decay groups included."""
    torch.manual_seed(0)
    model, ref = Toy(), Toy()
    ref.load_state_dict(model.state_dict())
    opt = build_optimizer(model, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    ref_opt = torch.optim.AdamW(param_groups(ref, 0.1), lr=1e-2, betas=(0.9, 0.95), foreach=False)
    assert opt.defaults["fused"] and not ref_opt.defaults["fused"]
    for _ in range(5):
        x = torch.randn(4, 8)
        for m, o in ((model, opt), (ref, ref_opt)):
            (m.norm(m.linear(x + m.cls_token[0])) * m.logit_scale).square().mean().backward()
            o.step()
            o.zero_grad()
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=name)


def test_lr_warmup_then_cosine_to_floor():
    lrs = [lr_at(s, 100, 1.0, 0.1, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10]))  # warm-up rises
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # cosine falls
    assert lr_at(100, 100, 1.0, 0.1, 10) == pytest.approx(0.1)
    assert lr_at(55, 100, 1.0, 0.1, 10) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_ema_momentum_and_teacher_temperature_ramps():
    assert ema_momentum_at(0, 100, 0.992, 1.0) == pytest.approx(0.992)
    assert ema_momentum_at(99, 100, 0.992, 1.0) == pytest.approx(1.0)
    assert teacher_temp_at(0, 100, 0.04, 0.07, 0.3) == pytest.approx(0.04)
    assert teacher_temp_at(15, 100, 0.04, 0.07, 0.3) == pytest.approx(0.055)
    assert teacher_temp_at(30, 100, 0.04, 0.07, 0.3) == pytest.approx(0.07)
