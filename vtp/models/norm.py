"""RMSNorm in fp32 with a hand-written backward: timm's `RmsNormFp32` (same parameters and options).

Why not timm's: its `rms_norm` is composed of pow, mean, rsqrt and two multiplies, and autograd differentiates
each one, so an RMSNorm's fwd+bwd cost ~3x a fused nn.LayerNorm on CPU. The closed-form backward,
dx = rstd * (g*w - x_hat * mean(g*w * x_hat)), takes half the time (benchmarks/bench_encoder.py; issue 15).
Under torch.compile it is timm's forward, which Inductor fuses into one kernel each way. On CUDA it is torch's
own `F.rms_norm` on fp32 inputs, which has fused kernels both ways there (and none for the backward on CPU):
one kernel each way where the hand-written function launches several.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import RmsNormFp32


class _RmsNormFp32(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
        x32 = x.float()
        rstd = torch.linalg.vector_norm(x32, dim=-1, keepdim=True).square_().div_(x.shape[-1]).add_(eps).rsqrt_()
        ctx.save_for_backward(x, weight, rstd)  # x in its own dtype: half the memory under bf16
        y = x32 * rstd
        return (y if weight is None else y.mul_(weight.float())).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, rstd = ctx.saved_tensors
        x_hat, g = x.float() * rstd, grad.float()
        grad_w = (g * x_hat).flatten(0, -2).sum(0).to(weight.dtype) if ctx.needs_input_grad[1] else None
        gy = g if weight is None else g * weight.float()
        dot = torch.linalg.vecdot(gy, x_hat).unsqueeze(-1).div_(x.shape[-1])
        grad_x = torch.addcmul(gy, x_hat, dot, value=-1).mul_(rstd)
        return grad_x.to(x.dtype), grad_w, None


def fused_rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """RMSNorm over the last dim by torch's op, in fp32, returned in x's dtype: `_RmsNormFp32`'s values."""
    w = None if weight is None else weight.float()
    return F.rms_norm(x.float(), x.shape[-1:], w, eps).to(x.dtype)


class RmsNorm(RmsNormFp32):
    """RMSNorm over the last dim, computed in fp32 and returned in the input's dtype (DINOv3/VTP)."""

    def __init__(self, channels: int, eps: float = 1e-6, affine: bool = True, **kwargs):
        super().__init__(channels, eps=eps, affine=affine, **kwargs)
        if len(self.normalized_shape) != 1:
            raise ValueError(f"RmsNorm: normalises the last dim only, got shape {self.normalized_shape}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return super().forward(x)
        if x.is_cuda:
            return fused_rms_norm(x, self.weight, self.eps)
        return _RmsNormFp32.apply(x, self.weight, self.eps)
