"""The VTP pixel decoder: latents (B, d, h, w) -> images (B, 3, h*p, w*p) in [-1, 1] (no output clamp).

1x1 conv d -> D, ViT blocks with 2D RoPE (no CLS token), final norm, 1x1 conv D -> 3*p^2, PixelShuffle(p):
no convolutional upsampling tower (METHOD.md 1.2).
"""
from __future__ import annotations

import torch
from torch import nn

from vtp.models.layers import ViTStack, init_vit_weights
from vtp.models.registry import ViTSpec


class PixelDecoder(nn.Module):
    def __init__(self, spec: ViTSpec, patch: int, latent_dim: int):
        super().__init__()
        self.latent_dim = latent_dim
        self.proj_in = nn.Conv2d(latent_dim, spec.width, kernel_size=1)
        self.blocks = ViTStack(spec, num_prefix=0)
        self.proj_out = nn.Conv2d(spec.width, 3 * patch * patch, kernel_size=1)
        self.unpatchify = nn.PixelShuffle(patch)
        init_vit_weights(self)

    def forward(self, latents: torch.Tensor, drop_rate: float = 0.0) -> torch.Tensor:
        if latents.ndim != 4 or latents.shape[1] != self.latent_dim or not latents.is_floating_point():
            raise ValueError(f"latents: expected a float tensor (B, {self.latent_dim}, h, w), got {latents.dtype} "
                             f"{tuple(latents.shape)}")
        x = self.proj_in(latents)
        b, d, h, w = x.shape
        x = self.blocks(x.flatten(2).transpose(1, 2), (h, w), drop_rate)
        return self.unpatchify(self.proj_out(x.transpose(1, 2).reshape(b, d, h, w)))
