"""Stage-1 reconstruction loss on images in [-1, 1]: `L_rec = l1_weight * L1 + mse_weight * MSE + lpips_weight *
LPIPS` (VTP Eq. 1: L1 + LPIPS; ViTok Eq. 1: MSE + LPIPS)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from vtp.losses.lpips import LPIPS


class ReconstructionLoss(nn.Module):
    """Returns scalars `l1`, `mse` (means per pixel and channel), `lpips` (batch mean) and `loss`.

    Every term is reported whatever its weight, so runs stay comparable; LPIPS at weight 0 runs without a graph.
    """

    def __init__(self, lpips_net: str = "vgg", lpips_weight: float = 1.0, lpips_weights: str | Path | None = None,
                 l1_weight: float = 1.0, mse_weight: float = 0.0):
        super().__init__()
        for name, w in (("lpips_weight", lpips_weight), ("l1_weight", l1_weight), ("mse_weight", mse_weight)):
            if w < 0:
                raise ValueError(f"{name} = {w}: must be >= 0")
        self.lpips_weight, self.l1_weight, self.mse_weight = lpips_weight, l1_weight, mse_weight
        self.lpips = LPIPS(lpips_net, lpips_weights)

    @classmethod
    def from_config(cls, lc) -> "ReconstructionLoss":
        """From a `loss:` section (vtp.config.LossConfig)."""
        return cls(lc.lpips_net, lc.lpips_weight, lc.lpips_weights, lc.l1_weight, lc.mse_weight)

    def lpips_flops(self, n: int, resolution: int, device: torch.device | str) -> float:
        """FLOPs LPIPS spends in one training call on n images: forward + backward to the reconstruction (its own
        weights are frozen), forward only at weight 0. Counted on zeros, apart from the model's FLOPs."""
        from torch.utils.flop_counter import FlopCounterMode

        train = self.lpips_weight > 0
        x = torch.zeros(n, 3, resolution, resolution, device=device, requires_grad=train)
        with FlopCounterMode(display=False) as counter, torch.set_grad_enabled(train):
            out = self.lpips(x, torch.zeros_like(x)).sum()
            if train:
                out.backward()
        return float(counter.get_total_flops())

    def forward(self, recon: Tensor, target: Tensor) -> dict[str, Tensor]:
        if recon.shape != target.shape or recon.ndim != 4 or recon.shape[1] != 3:
            raise ValueError(f"reconstruction loss: expected recon and target of the same (B,3,H,W) shape, got "
                             f"{tuple(recon.shape)} and {tuple(target.shape)}")
        diff = recon - target
        l1, mse = diff.abs().mean(), diff.square().mean()
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.lpips_weight > 0):
            perceptual = self.lpips(recon, target).mean()
        loss = self.l1_weight * l1 + self.mse_weight * mse + self.lpips_weight * perceptual
        return {"l1": l1, "mse": mse, "lpips": perceptual, "loss": loss}
