"""iBOT masked-patch loss (Zhou et al. 2022; DINOv2's `ibot_patch_loss` recipe)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vtp.losses.centering import PrototypeLoss


class IBOTLoss(PrototypeLoss):
    """Cross-entropy between teacher targets and student predictions at the masked patches of the global crops.

    `forward(student_logits (M, K), teacher_probs (M, K), sample_index (M,), n_samples)`: row m is a masked patch
    of image `sample_index[m]` (0 <= index < n_samples). Each image's patches are averaged, then the per-image
    values are averaged over all `n_samples` images; an image without masked patches counts as zero, as in
    DINOv2, so the loss scale follows the masking probability.
    """

    def forward(self, student_logits: Tensor, teacher_probs: Tensor, sample_index: Tensor,
                n_samples: int) -> Tensor:
        expected = (sample_index.shape[0], self.centering.prototypes)
        if tuple(student_logits.shape) != expected or tuple(teacher_probs.shape) != expected:
            raise ValueError(f"iBOT loss: expected student_logits and teacher_probs of shape {expected} (one row "
                             f"per entry of sample_index), got {tuple(student_logits.shape)} and "
                             f"{tuple(teacher_probs.shape)}")
        if sample_index.ndim != 1 or sample_index.dtype != torch.long or n_samples < 1:
            raise ValueError(f"iBOT loss: expected sample_index (M,) int64 and n_samples >= 1, got "
                             f"{tuple(sample_index.shape)} {sample_index.dtype} and n_samples = {n_samples}")
        if sample_index.numel() and not 0 <= sample_index.min() <= sample_index.max() < n_samples:
            raise ValueError(f"iBOT loss: sample_index must lie in [0, {n_samples}), got "
                             f"[{sample_index.min().item()}, {sample_index.max().item()}]")
        per_image = torch.bincount(sample_index, minlength=n_samples)
        ce = -(teacher_probs * F.log_softmax(student_logits.float() / self.student_temp, dim=-1)).sum(dim=-1)
        return (ce / per_image[sample_index]).sum() / n_samples
