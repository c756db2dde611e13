"""Semantic heads: the OpenCLIP text tower (random init) and the DINOv2 projection head."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.transformer import TextTransformer
from torch import nn

from vtp.models.registry import DinoHeadSpec, TextSpec


def build_text_tower(spec: TextSpec, clip_dim: int) -> TextTransformer:
    """OpenCLIP's text transformer as VTP configures it: causal mask, argmax (EOT) pooling, GELU (not
    QuickGELU), Linear projection without bias. Random init; the CLIP BPE vocabulary ships with open_clip."""
    if spec.width % spec.heads:
        raise ValueError(f"text tower: heads must divide the width; got width {spec.width}, heads {spec.heads}")
    return TextTransformer(context_length=spec.context_length, vocab_size=spec.vocab_size, width=spec.width,
                           heads=spec.heads, layers=spec.depth, output_dim=clip_dim, pool_type="argmax",
                           proj_type="linear", proj_bias=False, act_layer=nn.GELU)


class DinoHead(nn.Module):
    """DINOv2 head: MLP in -> hidden -> ... -> bottleneck (GELU between), L2-normalise, then a weight-normed
    Linear(bottleneck -> prototypes, no bias) with its norm g fixed to 1.

    Weight norm with g frozen at 1 is exactly a linear map by row-normalised weights, so we normalise in
    `forward` instead of registering a weight-norm parametrization with a frozen parameter.
    """

    def __init__(self, in_dim: int, spec: DinoHeadSpec):
        super().__init__()
        if spec.layers < 1:
            raise ValueError(f"dino head: expected layers >= 1, got {spec.layers}")
        dims = [in_dim] + [spec.hidden] * (spec.layers - 1) + [spec.bottleneck]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers += [nn.Linear(a, b)] + ([nn.GELU()] if i < len(dims) - 2 else [])
        self.mlp = nn.Sequential(*layers)
        self.prototypes = nn.Parameter(torch.empty(spec.prototypes, spec.bottleneck))
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        nn.init.trunc_normal_(self.prototypes, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_dim) -> logits (..., prototypes)."""
        x = F.normalize(self.mlp(x), dim=-1)
        return F.linear(x, F.normalize(self.prototypes, dim=-1))
