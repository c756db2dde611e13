"""Class-conditional DiT on tokenizer latents, LightningDiT style: predicts the flow-matching velocity.

latents (B, C, H, W) -> patch embed (Conv2d, kernel = stride = p) + fixed 2D sincos -> blocks -> adaLN final
layer -> unpatchify -> velocity (B, C, H, W). The condition is c = embed(t) + embed(y).

Blocks are adaLN-Zero: c regresses shift / scale / gate for the attention and the MLP branch, zero at init, so
every block starts as the identity, and the zero final layer makes the initial output exactly 0. Norms are
RMSNorm without weights (the modulation supplies the scale), the MLP is SwiGLU, attention uses the tokenizer's
2D axial RoPE and optional QK-norm. The label table has one extra row, the null class: label dropout trains it
and classifier-free guidance (`vtp.diffusion.samplers`) queries it.
"""
from __future__ import annotations

import math
from functools import partial

import torch
from timm.layers import Mlp, PatchEmbed
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed
from torch import nn
from torch.utils.checkpoint import checkpoint

from vtp.models.attention import RopeAttention
from vtp.models.layers import AxialRope, PackedSwiGLU
from vtp.models.norm import RmsNorm
from vtp.models.registry import DiTSpec

Norm = partial(RmsNorm, eps=1e-6, affine=False)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def timestep_features(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """DiT's sinusoidal features [cos | sin] of t (B,). Flow-matching DiTs (SiT, LightningDiT) feed t in [0, 1]
    unscaled; we keep that so their recipes transfer."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=-1)


class TimestepEmbed(nn.Module):
    def __init__(self, width: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = Mlp(freq_dim, width, width, act_layer=nn.SiLU)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_features(t, self.freq_dim))


class LabelEmbed(nn.Module):
    """Class embedding with a null class (index `num_classes`) for label dropout and guidance."""

    def __init__(self, num_classes: int, width: int, dropout: float):
        super().__init__()
        self.table = nn.Embedding(num_classes + 1, width)
        self.null_label = num_classes
        self.dropout = dropout

    def forward(self, y: torch.Tensor, force_drop: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        if force_drop is None and self.training and self.dropout > 0:
            device = generator.device if generator is not None else y.device
            force_drop = torch.rand(y.shape, generator=generator, device=device) < self.dropout
        if force_drop is not None:
            y = torch.where(force_drop.to(y.device), self.null_label, y)
        return self.table(y)


class DiTBlock(nn.Module):
    def __init__(self, spec: DiTSpec):
        super().__init__()
        w = spec.width
        self.norm1 = Norm(w)
        self.attn = RopeAttention(w, spec.heads, qkv_bias=True, num_prefix_tokens=0, qk_norm=spec.qk_norm,
                                  norm_layer=partial(RmsNorm, eps=1e-6), rotate_half=True)
        self.norm2 = Norm(w)
        self.mlp = PackedSwiGLU(w, 2 * spec.mlp_hidden)  # fc1 packs value and gate
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(w, 6 * w))

    def forward(self, x: torch.Tensor, c: torch.Tensor, rope: torch.Tensor | None) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN(c).unsqueeze(1).chunk(6, dim=-1)
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1), rope=rope)
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    def __init__(self, width: int, out_dim: int):
        super().__init__()
        self.norm = Norm(width)
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN(c).unsqueeze(1).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    """`forward(x, t, y) -> velocity`: x (B, C, H, W) latents on the path, t (B,) or scalar time in [0, 1],
    y (B,) class indices in [0, num_classes]; `num_classes` itself is the null class (`self.null_label`)."""

    def __init__(self, spec: DiTSpec, in_channels: int, grid: int | tuple[int, int], num_classes: int):
        super().__init__()
        grid = (grid, grid) if isinstance(grid, int) else tuple(grid)
        p = spec.patch
        if spec.width % spec.heads:
            raise ValueError(f"DiT {spec.name}: heads {spec.heads} must divide the width {spec.width}")
        if grid[0] % p or grid[1] % p:
            raise ValueError(f"DiT {spec.name}: patch {p} must divide the latent grid {grid[0]}x{grid[1]}")
        self.spec, self.in_channels, self.grid = spec, in_channels, grid
        self.token_grid = (grid[0] // p, grid[1] // p)
        self.patch_embed = PatchEmbed(img_size=None, patch_size=p, in_chans=in_channels, embed_dim=spec.width,
                                      output_fmt="NLC")
        self.t_embed = TimestepEmbed(spec.width)
        self.y_embed = LabelEmbed(num_classes, spec.width, spec.class_dropout)
        self.rope = AxialRope(spec.head_dim, spec.rope_base) if spec.rope else None
        self.blocks = nn.ModuleList(DiTBlock(spec) for _ in range(spec.depth))
        self.final = FinalLayer(spec.width, p * p * in_channels)
        self.unpatchify = nn.PixelShuffle(p)  # (B, C*p*p, h, w) -> (B, C, h*p, w*p)
        self.grad_checkpointing = False
        self.init_weights()

    @property
    def null_label(self) -> int:
        return self.y_embed.null_label

    def init_weights(self) -> None:
        """DiT's scheme: Xavier linears and patch embed, N(0, 0.02) embeddings, zero adaLN and output layers."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        conv = self.patch_embed.proj
        nn.init.xavier_uniform_(conv.weight.view(conv.weight.shape[0], -1))  # as the Linear it is
        nn.init.zeros_(conv.bias)
        nn.init.normal_(self.y_embed.table.weight, std=0.02)
        for fc in (self.t_embed.mlp.fc1, self.t_embed.mlp.fc2):
            nn.init.normal_(fc.weight, std=0.02)
        for layer in [*(blk.adaLN[-1] for blk in self.blocks), self.final.adaLN[-1], self.final.linear]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, *, force_drop: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """`force_drop` (B,) bool sends those labels to the null class; otherwise, in training mode, each label
        drops with probability `spec.class_dropout`, drawn from `generator`."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.in_channels, *self.grid):
            raise ValueError(f"DiT: expected latents (B, {self.in_channels}, {self.grid[0]}, {self.grid[1]}), "
                             f"got {tuple(x.shape)}")
        b = x.shape[0]
        tokens = self.patch_embed(x)
        if self.spec.sincos_pos:
            pos = build_sincos2d_pos_embed(list(self.token_grid), self.spec.width, device=x.device)
            tokens = tokens + pos.to(tokens.dtype)
        c = self.t_embed(t.expand(b) if t.ndim == 0 else t) + self.y_embed(y, force_drop, generator)
        rope = self.rope(self.token_grid) if self.rope is not None else None
        for blk in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                tokens = checkpoint(blk, tokens, c, rope, use_reentrant=False)
            else:
                tokens = blk(tokens, c, rope)
        out = self.final(tokens, c)  # (B, h*w, p*p*C), channel-major within a patch as PixelShuffle reads it
        return self.unpatchify(out.transpose(1, 2).reshape(b, -1, *self.token_grid))
