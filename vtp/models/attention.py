"""Self-attention with RoPE: timm's `AttentionRope` (its parameters, names and options) with the rotation of q
and k done by one autograd function.

Why not timm's forward: it rotates q and k each by slicing off the prefix tokens, building `rot(x)` (neg +
cat), multiplying by cos and sin and concatenating the prefix back: about six passes over q and k forward and
as many backward, plus the saved copies. `rotate_qk` pads the table so prefix rows turn by angle 0 (sin 0,
cos 1: identical values, no slicing), writes `x*cos + rot(x)*sin` in three passes into one buffer, and saves
only the (tokens, head_dim) table for backward, where the transpose rotation (by -angle) is the same three
passes. On CPU this is ~8% of the encoder's fwd+bwd at the benchmark shapes (issue 15). Under torch.compile the
rotation is timm's plain `apply_rot_embed`: Inductor fuses it and derives the backward itself, where the
function's `out=` buffers would break the block's graph.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import AttentionRope
from timm.layers.pos_embed_sincos import apply_rot_embed


def _halves(t: torch.Tensor, rotate_half: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The two members of each rotated pair: first/second half (rotate-half layout) or even/odd channels."""
    return t.chunk(2, dim=-1) if rotate_half else (t[..., 0::2], t[..., 1::2])


def _turn(x: torch.Tensor, cos: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor, out: torch.Tensor,
          rotate_half: bool) -> torch.Tensor:
    """out = x * cos, then out_1 += x_2 * m1 and out_2 += x_1 * m2 over the pairs (x_1, x_2)."""
    torch.mul(x, cos, out=out)
    x1, x2 = _halves(x, rotate_half)
    o1, o2 = _halves(out, rotate_half)
    o1.addcmul_(x2, m1)
    o2.addcmul_(x1, m2)
    return out


def _buffer(t: torch.Tensor) -> torch.Tensor:
    return torch.empty(t.shape, dtype=t.dtype, device=t.device)  # contiguous, whatever t's strides


class _RotateQK(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, sin, cos, rotate_half: bool):
        s1, s2 = _halves(sin, rotate_half)
        ctx.save_for_backward(sin, cos)
        ctx.rotate_half = rotate_half
        return tuple(_turn(t, cos, -s1, s2, _buffer(t), rotate_half) for t in (q, k))

    @staticmethod
    def backward(ctx, grad_q, grad_k):
        sin, cos = ctx.saved_tensors
        s1, s2 = _halves(sin, ctx.rotate_half)
        grads = tuple(None if g is None else _turn(g, cos, s2, -s1, _buffer(g), ctx.rotate_half)
                      for g in (grad_q, grad_k))
        return *grads, None, None, None


def rotate_qk(q: torch.Tensor, k: torch.Tensor, table: torch.Tensor, num_prefix: int, rotate_half: bool):
    """q, k (B, heads, tokens, head_dim) rotated by `table` ([sin | cos], (tokens - num_prefix, 2*head_dim));
    the first `num_prefix` tokens stay as they are. The same values as timm's `apply_rot_embed_cat` per token."""
    sin, cos = table.to(q.device).chunk(2, dim=-1)
    if num_prefix:
        sin = torch.cat([sin.new_zeros(num_prefix, sin.shape[1]), sin])
        cos = torch.cat([cos.new_ones(num_prefix, cos.shape[1]), cos])
    if sin.shape[0] != q.shape[-2]:
        raise ValueError(f"RoPE: table has {sin.shape[0] - num_prefix} rows for {q.shape[-2] - num_prefix} tokens")
    if torch.compiler.is_compiling():
        return tuple(apply_rot_embed(t, sin, cos, half=rotate_half) for t in (q, k))
    return _RotateQK.apply(q, k, sin, cos, rotate_half)


class RopeAttention(AttentionRope):
    """timm's `AttentionRope` (packed qkv, optional q/k norm, no gate or grouped heads) whose rotation is
    `rotate_qk`; attention is always `F.scaled_dot_product_attention`."""

    def __init__(self, dim: int, num_heads: int, **kwargs):
        super().__init__(dim, num_heads, **kwargs)
        if self.qkv is None or self.gate is not None or self.num_kv_groups > 1:
            raise ValueError("RopeAttention: packed qkv only (no separate projections, gate or grouped kv heads)")

    def forward(self, x: torch.Tensor, rope: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor:
        B, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = rotate_qk(q, k, rope, self.num_prefix_tokens, getattr(self, "rotate_half", False))
            q, k = q.type_as(v), k.type_as(v)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                           dropout_p=self.attn_drop.p if self.training else 0.0)
        return self.proj_drop(self.proj(self.norm(x.transpose(1, 2).reshape(B, N, self.attn_dim))))
