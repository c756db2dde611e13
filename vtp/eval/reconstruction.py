"""Reconstruction scoring over batches: PSNR, SSIM and LPIPS per image, plus the uint8 sets for FD/KID.

Every metric sees the same images a saved PNG would hold: originals and reconstructions are clamped to
[-1, 1] and quantised to uint8 first (LPIPS then reads them back as [-1, 1] floats).
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from vtp.eval.image_metrics import from_uint8, psnr, ssim, to_uint8
from vtp.eval.report import record

PROTOCOLS = {
    "psnr": "per-image PSNR on uint8 0-255 images (data_range 255), averaged over images",
    "ssim": "per-image SSIM, Gaussian window sigma 1.5 (11x11), K1 0.01, K2 0.03, population covariance, mean over "
            "channels (= skimage structural_similarity(gaussian_weights=True, use_sample_covariance=False)), "
            "averaged over images",
    "lpips_vgg": "LPIPS v0.1 with the VGG16 backbone on [-1, 1] images at native resolution, averaged over images",
}


class ReconstructionScores:
    """Feed (original, reconstruction) batches in [-1, 1]; `records()` gives the metric entries."""

    def __init__(self, lpips: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        self.lpips = lpips
        self.values: dict[str, list[torch.Tensor]] = {name: [] for name in PROTOCOLS}
        self.originals: list[torch.Tensor] = []
        self.reconstructions: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, originals: torch.Tensor, reconstructions: torch.Tensor) -> None:
        if originals.shape != reconstructions.shape:
            raise ValueError(f"reconstruction shape {tuple(reconstructions.shape)} differs from the input's "
                             f"{tuple(originals.shape)}")
        a, b = to_uint8(originals), to_uint8(reconstructions)
        self.values["psnr"].append(psnr(a.float(), b.float()).cpu())
        self.values["ssim"].append(ssim(a.float(), b.float()).cpu())
        self.values["lpips_vgg"].append(self.lpips(from_uint8(a), from_uint8(b)).float().cpu())
        self.originals.append(a.cpu())
        self.reconstructions.append(b.cpu())

    @property
    def count(self) -> int:
        return sum(len(a) for a in self.originals)

    def uint8_sets(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(originals, reconstructions), uint8 (N, 3, H, W) each."""
        return torch.cat(self.originals), torch.cat(self.reconstructions)

    def records(self, resolution: int, **common: Any) -> dict[str, dict]:
        out = {}
        for name, chunks in self.values.items():
            v = torch.cat(chunks).double()
            space = "pixels" if name != "lpips_vgg" else "lpips-vgg16"
            out[name] = record(v.mean().item(), n=len(v), feature_space=space, resolution=resolution,
                               protocol=PROTOCOLS[name], std=v.std().item() if len(v) > 1 else 0.0, **common)
        return out
