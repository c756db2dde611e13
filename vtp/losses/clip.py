"""CLIP contrastive loss (Radford et al. 2021): symmetric InfoNCE over image-text pairs, as OpenCLIP trains it."""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F
from torch import Tensor, nn

MAX_LOG_SCALE = math.log(100.0)  # CLIP caps the logit scale (temperature 1/100)


class ClipLoss(nn.Module):
    """`forward(image_emb (B,E), text_emb (B,E), log_scale) -> scalar`; embeddings L2-normalised by the caller.

    `log_scale` is the learnable log temperature parameter (CLIP initialises it to log(1/0.07)); the logits use
    `exp(min(log_scale, log 100))`. Under torch.distributed with world size > 1 (equal B on every rank), the
    embeddings are all-gathered with gradients and each rank scores its own rows against all columns, labels
    offset by rank * B. Per-rank losses then average to the global-batch loss, and DDP's gradient average
    equals the gradient of one process holding the global batch.
    """

    def forward(self, image_emb: Tensor, text_emb: Tensor, log_scale: Tensor | float) -> Tensor:
        if image_emb.ndim != 2 or image_emb.shape != text_emb.shape:
            raise ValueError(f"CLIP loss: expected image and text embeddings of the same (B, E) shape, got "
                             f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}")
        log_scale = torch.as_tensor(log_scale, device=image_emb.device)
        if log_scale.numel() != 1:
            raise ValueError(f"CLIP loss: log_scale must be a scalar, got shape {tuple(log_scale.shape)}")
        scale = log_scale.clamp(max=MAX_LOG_SCALE).exp()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # The autograd all_gather sums every rank's gradient into the rows each rank contributed.
            all_images = torch.cat(dist_fn.all_gather(image_emb), dim=0)
            all_texts = torch.cat(dist_fn.all_gather(text_emb), dim=0)
            offset = dist.get_rank() * image_emb.shape[0]
        else:
            all_images, all_texts, offset = image_emb, text_emb, 0
        labels = torch.arange(image_emb.shape[0], device=image_emb.device) + offset
        image_to_text = scale * image_emb @ all_texts.T
        text_to_image = scale * text_emb @ all_images.T
        return (F.cross_entropy(image_to_text, labels) + F.cross_entropy(text_to_image, labels)) / 2
