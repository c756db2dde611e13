"""The one EMA: parameters averaged in place (paired by name), buffers copied, wrappers refused."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from vtp.models.ema import EMA, ema_update_


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.norm = nn.BatchNorm1d(2)


def test_parameters_average_and_buffers_copy():
    torch.manual_seed(0)
    model = Net()
    ema = EMA(model)
    assert not any(p.requires_grad for p in ema.parameters())
    start = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.norm(torch.randn(8, 2))  # moves the running statistics (buffers)
    ema.update(model, 0.9)
    for name, p in model.named_parameters():
        torch.testing.assert_close(dict(ema.module.named_parameters())[name], 0.9 * start[name] + 0.1 * p)
    for name, b in model.named_buffers():
        assert torch.equal(dict(ema.module.named_buffers())[name], b)


def test_momentum_one_keeps_and_zero_copies():
    torch.manual_seed(0)
    model, ema = Net(), None
    ema = EMA(model)
    before = ema.module.lin.weight.clone()
    with torch.no_grad():
        model.lin.weight.mul_(3.0)
    ema.update(model, 1.0)
    assert torch.equal(ema.module.lin.weight, before)
    ema.update(model, 0.0)
    assert torch.equal(ema.module.lin.weight, model.lin.weight)


def test_bad_momentum_and_wrapped_source_are_refused():
    model = Net()
    ema = EMA(model)
    with pytest.raises(ValueError, match=r"expected a value in \[0, 1\], got -0.1"):
        ema.update(model, -0.1)
    with pytest.raises(KeyError, match="no counterpart in the ModuleDict"):
        ema_update_(ema.module, nn.ModuleDict({"module": model}), 0.9)
