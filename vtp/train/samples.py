"""Reconstruction grids during training: the same validation images every time, so the PNGs form a film."""
from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import save_image

from vtp.config import Config


def validation_images(cfg: Config, n: int = 8) -> torch.Tensor:
    from vtp.data.loader import eval_loader

    return next(iter(eval_loader(cfg, "val", batch_size=n, num_samples=n)))["image"]


@torch.no_grad()
def save_reconstruction_grid(tok: torch.nn.Module, images: torch.Tensor, out: Path, step: int,
                             write: bool = True) -> Path:
    device = next(tok.parameters()).device
    images = images.to(device)
    was_training = tok.training
    tok.eval()
    recon = tok.decode(tok.encode(images)).clamp(-1, 1)
    tok.train(was_training)
    path = out / "samples" / f"reconstruction-{step:07d}.png"
    if not write:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(torch.cat([images, recon]).float() * 0.5 + 0.5, path, nrow=images.shape[0], padding=1)
    return path
