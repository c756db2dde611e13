"""Teacher targets for DINO and iBOT: Sinkhorn-Knopp (DINOv2 default) or softmax with an EMA centre (DINO).

Both work on one rank's rows and agree with a single process holding the global batch: every statistic is
all-reduced, and ranks may hold different numbers of rows (iBOT's masked patches, uneven SSL subsets).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

Centering = Literal["sinkhorn", "softmax"]
CENTERINGS = ("sinkhorn", "softmax")


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce(t: Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> Tensor:
    if _distributed():
        dist.all_reduce(t, op=op)
    return t


@torch.no_grad()
def sinkhorn_knopp(logits: Tensor, temp: float, iterations: int = 3) -> Tensor:
    """(N, K) logits -> (N, K) targets whose rows sum to 1 and whose prototypes share the global mass evenly.

    Alternately rescales prototype (column) masses to 1/K and sample (row) masses to 1/N_global, starting from
    exp(logits / temp) normalised to total mass 1, and ending on rows.
    """
    x = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temp  # bf16 in, fp32 math
    count = _all_reduce(torch.tensor(float(x.shape[0]), device=x.device))
    if count.item() == 0:
        return torch.empty_like(x)
    peak = _all_reduce(x.max() if x.numel() else x.new_tensor(float("-inf")), dist.ReduceOp.MAX)
    q = torch.exp(x - peak)  # a global shift cancels in the normalisation and keeps exp from overflowing
    q /= _all_reduce(q.sum())
    tiny = torch.finfo(q.dtype).tiny  # guards against prototypes (or rows) whose mass underflowed to zero
    prototypes = x.shape[1]
    for _ in range(iterations):
        q /= _all_reduce(q.sum(dim=0, keepdim=True)).clamp_min(tiny) * prototypes
        q /= q.sum(dim=1, keepdim=True).clamp_min(tiny) * count
    return q * count


class TeacherCentering(nn.Module):
    """Turns teacher logits into targets, and keeps the EMA centre of the teacher logits (a (1, K) buffer)."""

    def __init__(self, prototypes: int, centering: Centering = "sinkhorn", momentum: float = 0.9):
        super().__init__()
        if centering not in CENTERINGS:
            raise ValueError(f"centering = {centering!r}: expected one of {', '.join(CENTERINGS)}")
        if prototypes < 1:
            raise ValueError(f"prototypes = {prototypes}: must be >= 1")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"center momentum = {momentum}: must be in [0, 1]")
        self.prototypes, self.centering, self.momentum = prototypes, centering, momentum
        self.register_buffer("center", torch.zeros(1, prototypes))

    def _check(self, logits: Tensor) -> None:
        if logits.ndim != 2 or logits.shape[1] != self.prototypes:
            raise ValueError(f"teacher logits: expected (N, {self.prototypes}), got {tuple(logits.shape)}")

    @torch.no_grad()
    def probs(self, logits: Tensor, temp: float) -> Tensor:
        self._check(logits)
        if temp <= 0:
            raise ValueError(f"teacher temperature = {temp}: must be > 0")
        if self.centering == "sinkhorn":
            return sinkhorn_knopp(logits, temp)
        return F.softmax((logits.to(self.center.dtype) - self.center) / temp, dim=-1)

    @torch.no_grad()
    def update(self, logits: Tensor) -> None:
        """centre <- m * centre + (1 - m) * mean of the global batch's teacher logits (used by softmax centering)."""
        self._check(logits)
        rows = logits.to(self.center.dtype)
        stats = torch.cat([rows.sum(dim=0), rows.new_tensor([rows.shape[0]])])
        stats = _all_reduce(stats)  # one collective: the sums and the row count together
        if stats[-1] > 0:
            self.center.mul_(self.momentum).add_(stats[:-1] / stats[-1], alpha=1.0 - self.momentum)


class PrototypeLoss(nn.Module):
    """What DINO and iBOT share: the student temperature and the teacher targets (with their centre state)."""

    def __init__(self, prototypes: int, student_temp: float = 0.1, centering: Centering = "sinkhorn",
                 center_momentum: float = 0.9):
        super().__init__()
        if student_temp <= 0:
            raise ValueError(f"student_temp = {student_temp}: must be > 0")
        self.student_temp = student_temp
        self.centering = TeacherCentering(prototypes, centering, center_momentum)

    def teacher_probs(self, teacher_logits: Tensor, teacher_temp: float) -> Tensor:
        """(N, K) teacher logits -> (N, K) targets, without a graph."""
        return self.centering.probs(teacher_logits, teacher_temp)

    def update_center(self, teacher_logits: Tensor) -> None:
        """EMA of the teacher logits' mean (all-reduced); the targets use it only with softmax centering."""
        self.centering.update(teacher_logits)
