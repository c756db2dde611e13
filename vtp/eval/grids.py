"""Reconstruction grids: original | reconstruction | error triplets, written as one PNG."""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import make_grid

ERROR_GAIN = 4.0  # |original - reconstruction| is faint at good PSNR; amplified (then clipped) to be visible


def error_map(originals: torch.Tensor, reconstructions: torch.Tensor, gain: float = ERROR_GAIN) -> torch.Tensor:
    """uint8 |a - b| * gain per channel (clipped to 255), same shape as the inputs."""
    diff = (originals.float() - reconstructions.float()).abs() * gain
    return diff.clamp(0, 255).round().to(torch.uint8)


def save_grid(originals: torch.Tensor, reconstructions: torch.Tensor, path: str | Path, per_row: int = 4,
              gain: float = ERROR_GAIN) -> Path:
    """Write uint8 (N, 3, H, W) pairs as rows of `per_row` (original, reconstruction, error) triplets."""
    if originals.shape != reconstructions.shape or originals.dtype != torch.uint8 or originals.dim() != 4:
        raise ValueError(f"save_grid: expected two uint8 (N, 3, H, W) tensors of one shape, got "
                         f"{originals.dtype} {tuple(originals.shape)} and {reconstructions.dtype} "
                         f"{tuple(reconstructions.shape)}")
    triplets = torch.stack([originals, reconstructions, error_map(originals, reconstructions, gain)], dim=1)
    grid = make_grid(triplets.flatten(0, 1), nrow=3 * per_row, padding=2, pad_value=255)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.permute(1, 2, 0).cpu().numpy()).save(path)
    return path
