"""KoLeo regulariser (Sablayrolles et al. 2019, used by DINOv2): spread features uniformly on the sphere."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class KoLeoLoss(nn.Module):
    """`-mean_i log(||x_i - x_nn(i)|| + eps)` over L2-normalised rows of x (B, D); nn(i) is i's nearest neighbour.

    Computed within the local batch (as DINOv2 does, per global crop); needs at least two rows.
    """

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"KoLeo: expected features (B, D) with B >= 2, got {tuple(x.shape)}")
        with torch.autocast(x.device.type, enabled=False):  # log of small distances: keep fp32
            x = F.normalize(x.float(), dim=-1, eps=self.eps)
            with torch.no_grad():  # the neighbour choice is not differentiated, only the distance to it
                similarity = x @ x.T
                similarity.fill_diagonal_(-2.0)  # below any cosine: a row is never its own neighbour
                neighbour = similarity.argmax(dim=1)
            distance = (x - x[neighbour]).norm(dim=-1)
            return -torch.log(distance + self.eps).mean()
