"""The one exponential moving average: t = m * t + (1 - m) * s for every parameter of a target, paired by name
with the source's, in fused foreach kernels; buffers are copied (they are state, not learned weights).

Used by the DINO/iBOT teacher (a partial copy of the tokenizer), the stage-2 decoder EMA and the DiT EMA. Under
FSDP2 target and source are sharded alike, so the pairs are equal shards.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


@torch.no_grad()
def ema_update_(target: nn.Module, source: nn.Module, momentum: float) -> None:
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"EMA momentum: expected a value in [0, 1], got {momentum}")
    src_params, src_buffers = dict(source.named_parameters()), dict(source.named_buffers())
    names = [n for n, _ in target.named_parameters()]
    missing = [n for n in names if n not in src_params]
    if missing:
        raise KeyError(f"EMA update: {len(missing)} target parameters have no counterpart in the "
                       f"{type(source).__name__} (first: {missing[0]!r}); pass the bare module, not a wrapper")
    params = [p for _, p in target.named_parameters()]
    torch._foreach_mul_(params, momentum)
    torch._foreach_add_(params, [src_params[n].detach() for n in names], alpha=1.0 - momentum)
    for name, buf in target.named_buffers():
        if name in src_buffers:
            buf.copy_(src_buffers[name])


class EMA(nn.Module):
    """A frozen shadow copy of a whole module, kept as the EMA of its weights (checkpointed like any module)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.module = copy.deepcopy(model).requires_grad_(False).eval()

    def update(self, model: nn.Module, momentum: float) -> None:
        ema_update_(self.module, model, momentum)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
