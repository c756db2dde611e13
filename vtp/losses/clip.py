"""CLIP contrastive loss (Radford et al. 2021) as OpenCLIP trains it, and the logit-scale clamp it applies.

The loss is `open_clip.loss.ClipLoss` with a local loss and an all-gather with gradients: each rank scores its
own rows against every rank's columns, so per-rank losses average to the global-batch loss and DDP's gradient
average equals one process holding the global batch. The logit scale is used as it is (`exp(log_scale)`); like
OpenCLIP's `train.py`, the caller clamps the parameter to [0, ln 100] in place after each optimizer step
(`clamp_logit_scale_`). Clamping inside the loss instead would zero its gradient forever once it passed the cap.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
from open_clip.loss import ClipLoss as OpenClipLoss
from torch import Tensor, nn

MAX_LOG_SCALE = math.log(100.0)  # CLIP caps the logit scale (temperature 1/100)


class ClipLoss(nn.Module):
    """`forward(image_emb (B,E), text_emb (B,E), log_scale) -> scalar`; embeddings L2-normalised by the caller,
    equal B on every rank. Rank and world size are read from torch.distributed when the loss is built."""

    def __init__(self):
        super().__init__()
        distributed = dist.is_available() and dist.is_initialized()
        rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
        self.loss = OpenClipLoss(local_loss=True, gather_with_grad=True, cache_labels=True, rank=rank,
                                 world_size=world)

    def forward(self, image_emb: Tensor, text_emb: Tensor, log_scale: Tensor | float) -> Tensor:
        if image_emb.ndim != 2 or image_emb.shape != text_emb.shape:
            raise ValueError(f"CLIP loss: expected image and text embeddings of the same (B, E) shape, got "
                             f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}")
        log_scale = torch.as_tensor(log_scale, device=image_emb.device)
        if log_scale.numel() != 1:
            raise ValueError(f"CLIP loss: log_scale must be a scalar, got shape {tuple(log_scale.shape)}")
        return self.loss(image_emb, text_emb, log_scale.exp())


@torch.no_grad()
def clamp_logit_scale_(log_scale: Tensor) -> None:
    """OpenCLIP's post-step clamp: log_scale in [0, ln 100], in place (works on FSDP shards too)."""
    log_scale.clamp_(0.0, MAX_LOG_SCALE)
