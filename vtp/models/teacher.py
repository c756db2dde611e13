"""The DINOv2/iBOT EMA teacher: a frozen copy of what the SSL targets need, updated as t = m*t + (1-m)*s."""
from __future__ import annotations

import copy

import torch
from torch import nn

from vtp.models.ema import ema_update_
from vtp.models.encoder import semantic_features
from vtp.models.tokenizer import Tokenizer


class EMATeacher(nn.Module):
    """Frozen deep copies of the student's encoder, its bottleneck (only when the semantic heads read the
    bottleneck, i.e. `bottleneck_ae_only=False`) and its DINO head. Pass the bare `Tokenizer` (not a
    DDP/FSDP wrapper) to `__init__` and `update`: parameters are paired by name."""

    def __init__(self, tok: Tokenizer):
        super().__init__()
        if tok.dino_head is None:
            raise ValueError(f"EMATeacher: size {tok.spec.name!r} has no DINO head (spec.dino is None)")
        self.encoder = copy.deepcopy(tok.encoder)
        self.bottleneck = None if tok.bottleneck_ae_only else copy.deepcopy(tok.bottleneck)
        self.dino_head = copy.deepcopy(tok.dino_head)
        self.requires_grad_(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, patch_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """dict(cls_logits (B, K), patch_logits (B, N, K)), no stochastic depth, no gradients.

        With `patch_mask` (B, N) bool, patch_logits is (M, K) for the M selected patches only (the iBOT
        targets), which avoids projecting every patch onto K prototypes.
        """
        feats = semantic_features(self.encoder, self.bottleneck, images)
        patches = feats["patches"]
        if patch_mask is not None:
            if patch_mask.shape != patches.shape[:2] or patch_mask.dtype != torch.bool:
                raise ValueError(f"patch_mask: expected a bool tensor of shape {tuple(patches.shape[:2])}, "
                                 f"got {patch_mask.dtype} {tuple(patch_mask.shape)}")
            patches = patches[patch_mask]
        return {"cls_logits": self.dino_head(feats["cls"]), "patch_logits": self.dino_head(patches)}

    def update(self, tok: Tokenizer, momentum: float) -> None:
        """In place, for every teacher parameter: t = m*t + (1-m)*s, paired by name with the bare Tokenizer."""
        ema_update_(self, tok, momentum)
