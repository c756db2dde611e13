"""The VTP vision encoder (DINOv3-style ViT trunk) and the two latent bottlenecks.

Images are float tensors (B, 3, H, W) in [-1, 1]; H and W must be multiples of the patch size (any grid
works: RoPE tables are built per grid, so global and local crops share one trunk).
"""
from __future__ import annotations

import torch
from timm.layers import PatchEmbed
from torch import nn

from vtp.losses.kl import kl_divergence
from vtp.models.layers import ViTStack, init_vit_weights
from vtp.models.registry import ViTSpec


def check_images(images: torch.Tensor, patch: int) -> tuple[int, int]:
    """Validate (B, 3, H, W) floats with H, W multiples of `patch`; return the patch grid (h, w)."""
    if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(f"images: expected a float tensor (B, 3, H, W) in [-1, 1], got {images.dtype} "
                         f"{tuple(images.shape)}")
    h, w = images.shape[-2:]
    if h % patch or w % patch:
        raise ValueError(f"images: expected H and W to be multiples of the patch size {patch}, got {h}x{w}")
    return h // patch, w // patch


class VisionEncoder(nn.Module):
    """Patch embed (Conv2d k=s=p) -> [CLS] + registers + patches -> ViT blocks with 2D RoPE -> final norm.

    `forward` returns the normed tokens as dict(cls=(B, D) or None, patches=(B, N, D)); registers are dropped.
    `intermediate_layers` returns that for each of the last n blocks (the headline linear probe's features).
    `masks` (B, N) bool replaces those patches by the learned (zero-initialised) mask token (iBOT student).
    """

    def __init__(self, spec: ViTSpec, patch: int, cls_token: bool = True):
        super().__init__()
        self.patch, self.width = patch, spec.width
        self.patch_embed = PatchEmbed(img_size=None, patch_size=patch, in_chans=3, embed_dim=spec.width,
                                      output_fmt="NLC")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, spec.width)) if cls_token else None
        self.registers = nn.Parameter(torch.zeros(1, spec.registers, spec.width)) if spec.registers else None
        self.mask_token = nn.Parameter(torch.zeros(1, 1, spec.width))
        self.num_prefix = int(cls_token) + spec.registers
        self.blocks = ViTStack(spec, num_prefix=self.num_prefix)
        init_vit_weights(self)
        for p in (self.cls_token, self.registers):
            if p is not None:
                nn.init.normal_(p, std=0.02)

    def forward(self, images: torch.Tensor, masks: torch.Tensor | None = None,
                drop_rate: float = 0.0) -> dict[str, torch.Tensor | None]:
        x, grid = self._tokens(images, masks)
        return self._split(self.blocks(x, grid, drop_rate))

    @torch.no_grad()
    def intermediate_layers(self, images: torch.Tensor, n: int = 4) -> list[dict[str, torch.Tensor | None]]:
        """For each of the last `n` blocks (oldest first), the final-normed tokens as dict(cls=(B, D) or None,
        patches=(B, N, D)): DINOv2's `get_intermediate_layers(n, return_class_token=True)` with its norm.
        No masks, no stochastic depth, no autograd (probe features); the last entry equals `forward(images)`."""
        x, grid = self._tokens(images, None)
        return [self._split(t) for t in self.blocks.intermediate(x, grid, n)]

    def _tokens(self, images: torch.Tensor, masks: torch.Tensor | None) -> tuple[torch.Tensor, tuple[int, int]]:
        """[CLS] + registers + patch embeddings (masked patches replaced by the mask token), and the grid."""
        grid = check_images(images, self.patch)
        x = self.patch_embed(images)
        b, n, _ = x.shape
        if masks is not None:
            if masks.shape != (b, n) or masks.dtype != torch.bool:
                raise ValueError(f"masks: expected a bool tensor of shape {(b, n)}, got {masks.dtype} "
                                 f"{tuple(masks.shape)}")
            x = torch.where(masks.unsqueeze(-1), self.mask_token.to(x.dtype), x)
        prefix = [p for p in (self.cls_token, self.registers) if p is not None]
        if masks is None:  # touch the mask token so DDP sees every parameter used in every forward: a zero
            # added to the first prefix token (one row, not every patch), else to the patches
            if prefix:
                prefix[0] = prefix[0] + 0 * self.mask_token
            else:
                x = x + 0 * self.mask_token
        prefix = [p.expand(b, -1, -1).to(x.dtype) for p in prefix]
        return torch.cat([*prefix, x], dim=1), grid

    def _split(self, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
        return {"cls": x[:, 0] if self.cls_token is not None else None, "patches": x[:, self.num_prefix:]}


class LinearBottleneck(nn.Module):
    """VTP: Linear(D -> d, no bias) after the final norm; deterministic, no KL."""

    def __init__(self, width: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(width, dim, bias=False)
        nn.init.trunc_normal_(self.proj.weight, std=0.02)

    def mode(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.proj(x), None


class GaussianBottleneck(nn.Module):
    """ViTok: Linear(D -> 2d) gives mean and log-variance of a diagonal Gaussian.

    `forward` samples in training mode and returns the mean in eval mode, with the KL to N(0, I) summed over
    a sample's latent elements and averaged over the batch (`vtp.losses.kl`, the LDM convention): a
    scalar. `mode` is the deterministic mean.
    """

    def __init__(self, width: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(width, 2 * dim)
        init_vit_weights(self)

    def mode(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).chunk(2, dim=-1)[0]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.proj(x).float().chunk(2, dim=-1)
        logvar = logvar.clamp(-30.0, 20.0)  # the usual LDM bounds: keeps exp() finite
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean) if self.training else mean
        return z.to(x.dtype), kl_divergence(mean, logvar)


def semantic_features(encoder: VisionEncoder, bottleneck: nn.Module | None, images: torch.Tensor,
                      masks: torch.Tensor | None = None, drop_rate: float = 0.0) -> dict[str, torch.Tensor | None]:
    """What the CLIP/DINO heads read: the trunk's tokens, bottlenecked (deterministic mode) when given one."""
    out = encoder(images, masks=masks, drop_rate=drop_rate)
    if bottleneck is None:
        return out
    return {k: None if v is None else bottleneck.mode(v) for k, v in out.items()}
