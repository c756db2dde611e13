"""ViT building blocks shared by the encoder and the pixel decoder (DINOv3/VTP style, timm layers).

A `ViTStack` is pre-norm blocks + a final norm over tokens `[prefix..., patches...]`. RoPE (`Rope`) is
DINOv3's 2D axial by default, rotating only the patch tokens (prefix tokens, CLS and registers, stay
unrotated); ViTok sizes use ViTok's integer-position RoPE (`ViTSpec.rope`). Stochastic depth is sample-level
(`sample_drop_residual`), so a dropped sample costs no compute.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from timm.layers import GluMlp, LayerScale, Mlp
from timm.layers.pos_embed_sincos import RotaryEmbeddingDinoV3
from torch import nn
from torch.utils.checkpoint import checkpoint

from vtp.models.attention import RopeAttention
from vtp.models.norm import RmsNorm
from vtp.models.registry import ROPE_STYLES, ViTSpec

NORMS = ("rmsnorm", "layernorm")
FFNS = ("swiglu", "geglu", "mlp")


def make_norm(kind: str, dim: int) -> nn.Module:
    """RMSNorm runs in fp32 (DINOv3/VTP, eps 1e-5); nn.LayerNorm is already fp32 under autocast."""
    if kind == "rmsnorm":
        return RmsNorm(dim, eps=1e-5)
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=1e-6)
    raise ValueError(f"norm: expected one of {NORMS}, got {kind!r}")


class _SiluGate(torch.autograd.Function):
    """silu(a) * b of h = [a, b] (last dim), whose backward writes both halves' gradients into one (.., 2h)
    tensor. Autograd's `chunk` backward concatenates them instead: one more full copy of fc1's output, which
    cost ~0.2x of an eager SwiGLU MLP's fwd+bwd on CPU (issue 15). Same values as `F.silu(a) * b`, which is what
    runs under torch.compile (`swiglu_gate`)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(h)
        a, b = h.chunk(2, dim=-1)
        return F.silu(a).mul_(b)  # in place: one buffer fewer

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> torch.Tensor:
        (h,) = ctx.saved_tensors
        a, b = h.chunk(2, dim=-1)
        grad = torch.empty_like(h)
        grad_a, grad_b = grad.chunk(2, dim=-1)  # each half is computed in place, with no temporaries
        torch.mul(grad_out, b, out=grad_a)
        torch.ops.aten.silu_backward.grad_input(grad_a, a, grad_input=grad_a)
        torch.ops.aten.silu.out(a, out=grad_b).mul_(grad_out)
        return grad


def swiglu_gate(h: torch.Tensor) -> torch.Tensor:
    """silu(a) * b of h = [a, b]: `_SiluGate` eagerly; plain ops under torch.compile, which Inductor fuses and
    differentiates itself (the function's `out=` writes would break the block's graph)."""
    if torch.compiler.is_compiling():
        a, b = h.chunk(2, dim=-1)
        return F.silu(a) * b
    return _SiluGate.apply(h)


class PackedSwiGLU(GluMlp):
    """timm's `SwiGLUPacked` (fc1 packs value and gate: twice the hidden width; the same parameter names), with
    the gate's backward written into one buffer (`_SiluGate`)."""

    def __init__(self, width: int, packed_hidden: int):
        super().__init__(width, packed_hidden, act_layer=nn.SiLU, gate_last=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.drop1(swiglu_gate(self.fc1(x))))
        return self.drop2(self.fc2(x))


def make_ffn(spec: ViTSpec) -> nn.Module:
    if spec.ffn == "swiglu":
        return PackedSwiGLU(spec.width, 2 * spec.mlp_hidden)
    if spec.ffn == "geglu":
        return GluMlp(spec.width, 2 * spec.mlp_hidden, act_layer=nn.GELU, gate_last=False)
    if spec.ffn == "mlp":
        return Mlp(spec.width, spec.mlp_hidden, act_layer=nn.GELU)
    raise ValueError(f"ffn: expected one of {FFNS}, got {spec.ffn!r}")


def sample_drop_residual(x: torch.Tensor, branch: Callable[[torch.Tensor], torch.Tensor],
                         rate: float) -> torch.Tensor:
    """x + branch(x) with sample-level stochastic depth (DINOv2/v3, VTP METHOD.md 1.1).

    The branch runs on a random subset of round(B * (1 - rate)) samples and is added back scaled by
    B / keep, so the expectation over subsets is x + branch(x). The keep count depends only on B and
    rate, so every DDP rank does the same amount of work.
    """
    b = x.shape[0]
    keep = max(1, round(b * (1.0 - rate)))
    if rate <= 0.0 or keep >= b:
        return x + branch(x)
    idx = torch.randperm(b, device=x.device)[:keep]
    return torch.index_add(x, 0, idx, branch(x[idx]).to(x.dtype), alpha=b / keep)


class Rope(nn.Module):
    """Rotary position tables for one ViT, in one of `ROPE_STYLES` (their definitions and sources are in
    `vtp.models.registry.ROPE_STYLES`; METHOD.md 1.1 and 4.1):

    - "dinov3-2d" (default): DINOv3's 2D axial RoPE (timm's port), per-axis coordinates normalised to [-1, 1]
      ("separate"), head_dim/4 frequencies per axis with periods base^(2i/(head_dim/2)), rotate-half layout.
    - "vitok-1d": integer positions p = 0..N-1 over the flattened sequence, angle p * base^(-2i/head_dim)
      for i < head_dim/2, interleaved pairs; with `num_prefix` > 0 the prefix tokens are rotated too
      (positions 0..num_prefix-1, then the row-major patches).
    - "vitok-2d": integer column x and row y, angles x * base^(-4j/head_dim) then y * base^(-4j/head_dim)
      for j < head_dim/4, interleaved pairs; prefix tokens are not rotated.

    `forward(grid)` returns a (tokens, 2*head_dim) table [sin | cos] in the layout that timm's
    `apply_rot_embed_cat(x, table, half=rope.rotate_half)` and `vtp.models.attention.rotate_qk` expect, for the
    tokens of a sequence `[prefix..., patches...]` after its first `rope.unrotated_prefix` (which are left
    alone): h*w rows, plus `rope.rotated_prefix` leading rows for "vitok-1d". Tables are cached per grid.
    """

    def __init__(self, head_dim: int, base: float, style: str = "dinov3-2d", num_prefix: int = 0):
        super().__init__()
        if style not in ROPE_STYLES:
            raise ValueError(f"rope: expected one of {', '.join(ROPE_STYLES)}, got {style!r}")
        multiple = 2 if style == "vitok-1d" else 4
        if head_dim % multiple:
            raise ValueError(f"{style[-2:].upper()} RoPE: head dim must be a multiple of {multiple}, got {head_dim}")
        self.style, self.head_dim, self.base = style, head_dim, float(base)
        self.rotate_half = style == "dinov3-2d"
        self.rotated_prefix = num_prefix if style == "vitok-1d" else 0
        self.unrotated_prefix = num_prefix - self.rotated_prefix
        if style == "dinov3-2d":
            self.rope = RotaryEmbeddingDinoV3(head_dim, temperature=base, normalize_coords="separate",
                                              rotate_half=True)
        else:  # tables are computed in float64 on the CPU; this (unsaved) buffer only follows the module's device
            self.register_buffer("device_probe", torch.empty(0), persistent=False)
        self._tables: dict[tuple, torch.Tensor] = {}

    def angles(self, grid: tuple[int, int]) -> torch.Tensor:
        """ViTok styles: (rotated_prefix + h*w, head_dim/2) rotation angles in float64, on the CPU."""
        h, w = grid
        f64 = torch.float64
        if self.style == "vitok-1d":
            pos = torch.arange(self.rotated_prefix + h * w, dtype=f64)
            freqs = self.base ** (-torch.arange(0, self.head_dim, 2, dtype=f64) / self.head_dim)
            return pos[:, None] * freqs
        if self.style == "vitok-2d":
            idx = torch.arange(h * w)
            col, row = (idx % w).to(f64), (idx // w).to(f64)
            freqs = self.base ** (-torch.arange(0, self.head_dim, 4, dtype=f64) / self.head_dim)
            return torch.cat([col[:, None] * freqs, row[:, None] * freqs], dim=-1)
        raise ValueError(f"rope: {self.style!r} has no integer-position angles")

    def forward(self, grid: tuple[int, int]) -> torch.Tensor:
        """(rotated_prefix + h*w, 2*head_dim): [sin | cos] for the rotated tokens of an h x w grid."""
        device = self.rope.periods.device if self.style == "dinov3-2d" else self.device_probe.device
        key = (tuple(grid), device)
        if key not in self._tables:
            # A table first built under inference_mode would poison later training steps: build a normal one.
            with torch.inference_mode(False), torch.no_grad():
                if self.style == "dinov3-2d":
                    table = self.rope.get_embed(list(grid))
                else:
                    a = self.angles(grid).repeat_interleave(2, dim=-1)  # pair (2i, 2i+1) turns by angle i
                    table = torch.cat([a.sin(), a.cos()], dim=-1).to(device=device, dtype=torch.float32)
                self._tables[key] = table
        return self._tables[key]


AxialRope = Rope  # the DINOv3 default under its former name (the DiT and older callers)


class Block(nn.Module):
    """Pre-norm block: x + ls1(attn(norm1(x))), then x + ls2(ffn(norm2(x)))."""

    def __init__(self, spec: ViTSpec, num_prefix: int, rotate_half: bool = True):
        """`num_prefix`: leading tokens the RoPE leaves alone; `rotate_half`: the table's channel layout."""
        super().__init__()
        self.norm1 = make_norm(spec.norm, spec.width)
        self.attn = RopeAttention(spec.width, spec.heads, qkv_bias=spec.qkv_bias, num_prefix_tokens=num_prefix,
                                  qk_norm=spec.qk_norm, norm_layer=partial(RmsNorm, eps=1e-5),
                                  rotate_half=rotate_half)
        self.ls1 = LayerScale(spec.width, spec.layerscale) if spec.layerscale else nn.Identity()
        self.norm2 = make_norm(spec.norm, spec.width)
        self.mlp = make_ffn(spec)
        self.ls2 = LayerScale(spec.width, spec.layerscale) if spec.layerscale else nn.Identity()

    def forward(self, x: torch.Tensor, rope: torch.Tensor, drop_rate: float = 0.0) -> torch.Tensor:
        x = sample_drop_residual(x, lambda t: self.ls1(self.attn(self.norm1(t), rope=rope)), drop_rate)
        return sample_drop_residual(x, lambda t: self.ls2(self.mlp(self.norm2(t))), drop_rate)


class ViTStack(nn.Module):
    """`depth` blocks sharing one RoPE table (style `spec.rope`), then the final norm. Tokens are
    (B, num_prefix + h*w, D)."""

    def __init__(self, spec: ViTSpec, num_prefix: int = 0):
        super().__init__()
        if spec.width % spec.heads:
            raise ValueError(f"ViT: heads must divide the width; got width {spec.width}, heads {spec.heads}")
        self.num_prefix = num_prefix
        self.rope = Rope(spec.head_dim, spec.rope_base, spec.rope, num_prefix)
        self.blocks = nn.ModuleList(Block(spec, self.rope.unrotated_prefix, self.rope.rotate_half)
                                    for _ in range(spec.depth))
        self.norm = make_norm(spec.norm, spec.width)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, grid: tuple[int, int], drop_rate: float = 0.0) -> torch.Tensor:
        if x.shape[1] != self.num_prefix + grid[0] * grid[1]:
            raise ValueError(f"ViT: expected {self.num_prefix} + {grid[0]}x{grid[1]} tokens, got {x.shape[1]}")
        rope = self.rope(grid)
        for blk in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                # Non-reentrant checkpointing replays the RNG, so the drop subsets match on recompute.
                x = checkpoint(blk, x, rope, drop_rate, use_reentrant=False)
            else:
                x = blk(x, rope, drop_rate)
        return self.norm(x)

    def intermediate(self, x: torch.Tensor, grid: tuple[int, int], n: int) -> list[torch.Tensor]:
        """The outputs of the last `n` blocks, each through the final norm (DINOv2's
        `get_intermediate_layers(norm=True)`), oldest first; no stochastic depth, no checkpointing."""
        if not 1 <= n <= len(self.blocks):
            raise ValueError(f"intermediate layers: expected 1 <= n <= depth {len(self.blocks)}, got {n}")
        if x.shape[1] != self.num_prefix + grid[0] * grid[1]:
            raise ValueError(f"ViT: expected {self.num_prefix} + {grid[0]}x{grid[1]} tokens, got {x.shape[1]}")
        rope, outs = self.rope(grid), []
        for i, blk in enumerate(self.blocks):
            x = blk(x, rope, 0.0)
            if i >= len(self.blocks) - n:
                outs.append(self.norm(x))
        return outs


def init_vit_weights(module: nn.Module) -> None:
    """Truncated-normal(0.02) Linear weights and zero biases (DINOv2/v3); other layers keep their defaults."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
