"""Stage-1 reconstruction loss (VTP Eq. 1): `L_rec = L1 + lpips_weight * LPIPS`, on images in [-1, 1]."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from vtp.losses.lpips import LPIPS


class ReconstructionLoss(nn.Module):
    """Returns scalars `l1` (mean absolute error per pixel and channel), `lpips` (batch mean) and `loss`.

    With `lpips_weight == 0` LPIPS is still reported, computed without a graph, so runs stay comparable.
    """

    def __init__(self, lpips_net: str = "vgg", lpips_weight: float = 1.0, lpips_weights: str | Path | None = None):
        super().__init__()
        if lpips_weight < 0:
            raise ValueError(f"lpips_weight = {lpips_weight}: must be >= 0")
        self.lpips_weight = lpips_weight
        self.lpips = LPIPS(lpips_net, lpips_weights)

    def forward(self, recon: Tensor, target: Tensor) -> dict[str, Tensor]:
        if recon.shape != target.shape or recon.ndim != 4 or recon.shape[1] != 3:
            raise ValueError(f"reconstruction loss: expected recon and target of the same (B,3,H,W) shape, got "
                             f"{tuple(recon.shape)} and {tuple(target.shape)}")
        l1 = (recon - target).abs().mean()
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.lpips_weight > 0):
            perceptual = self.lpips(recon, target).mean()
        return {"l1": l1, "lpips": perceptual, "loss": l1 + self.lpips_weight * perceptual}
