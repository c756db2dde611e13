"""DINO loss on CLS tokens (Caron et al. 2021; DINOv2's `dino_clstoken_loss` recipe)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from vtp.losses.centering import PrototypeLoss


class DINOLoss(PrototypeLoss):
    """Cross-entropy between the teacher's targets for the global views and the student's view of every crop.

    `forward(student_logits, teacher_probs)`:
      - `student_logits`: one (B, K) tensor per crop, the global crops first, in the teacher's view order, then
        the local crops;
      - `teacher_probs`: one (B, K) tensor per global view, **in view order** (not swapped); build them with
        `teacher_probs()`.
    Every student crop is paired with every teacher view except its own (a global crop is not its own target);
    the loss is the mean over those pairs of the batch-mean `-sum_k p_t log softmax(s / student_temp)`.
    With 2 global and n local crops that is 2 + 2n pairs, the average DINOv2 takes.
    """

    def forward(self, student_logits: list[Tensor], teacher_probs: list[Tensor]) -> Tensor:
        n_views = len(teacher_probs)
        if n_views < 1 or len(student_logits) < max(n_views, 2):
            raise ValueError(f"DINO loss: need >= 1 teacher view and the student's global crops first plus at "
                             f"least one other crop; got {len(student_logits)} student crops and {n_views} views")
        expected = (teacher_probs[0].shape[0], self.centering.prototypes)
        for name, tensors in (("student_logits", student_logits), ("teacher_probs", teacher_probs)):
            for i, t in enumerate(tensors):
                if tuple(t.shape) != expected:
                    raise ValueError(f"DINO loss: {name}[{i}] has shape {tuple(t.shape)}, expected {expected}")
        total, pairs = 0.0, 0
        for s, student in enumerate(student_logits):
            log_p = F.log_softmax(student.float() / self.student_temp, dim=-1)
            for t, target in enumerate(teacher_probs):
                if s != t:
                    total = total - (target * log_p).sum(dim=-1).mean()
                    pairs += 1
        return total / pairs
