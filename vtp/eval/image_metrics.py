"""Per-image reconstruction metrics: PSNR and SSIM, batched in torch.

Inputs are (B, 3, H, W) tensors on the 0..255 scale (what a PNG holds; `to_uint8` maps the library's [-1, 1]
images there). Both functions return one value per image, computed in float64, and equal
`skimage.metrics.peak_signal_noise_ratio` / `structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=..., channel_axis=0)` image by image (tests/test_eval_image_metrics.py).
"""
from __future__ import annotations

import torch

SSIM_K1, SSIM_K2 = 0.01, 0.03  # Wang et al. 2004
SSIM_SIGMA, SSIM_TRUNCATE = 1.5, 3.5  # skimage's Gaussian window: radius int(3.5 * 1.5 + 0.5) = 5, i.e. 11 x 11


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float images -> uint8 0..255 (clamped, rounded): the values a saved PNG would hold."""
    if not images.is_floating_point():
        raise TypeError(f"to_uint8: expected float images in [-1, 1], got dtype {images.dtype}")
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(images: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float [-1, 1] (the library convention)."""
    if images.dtype != torch.uint8:
        raise TypeError(f"from_uint8: expected uint8 images, got dtype {images.dtype}")
    return images.float() / 127.5 - 1


def _check_pair(a: torch.Tensor, b: torch.Tensor, name: str) -> None:
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"{name}: expected two (B, C, H, W) tensors of the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, (B,). Identical images give +inf."""
    _check_pair(a, b, "psnr")
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range ** 2 / mse)


def _gaussian_window(sigma: float, truncate: float) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def _band(n: int, w: torch.Tensor) -> torch.Tensor:
    """(n, n - k + 1) matrix M with (x @ M)[j] = sum_i w[i] x[i + j]: a 'valid' 1-D filter as a product."""
    k, m = w.numel(), n - w.numel() + 1
    band = torch.zeros(n, m, dtype=w.dtype, device=w.device)
    cols = torch.arange(m, device=w.device)
    for i in range(k):
        band[i + cols, cols] = w[i]
    return band


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 255.0, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Mean structural similarity per image (mean over channels and valid window positions), (B,)."""
    _check_pair(a, b, "ssim")
    w = _gaussian_window(sigma, SSIM_TRUNCATE).to(a.device)
    k = w.numel()
    if min(a.shape[-2:]) < k:
        raise ValueError(f"ssim: images must be at least {k}x{k} for sigma={sigma}, got {tuple(a.shape[-2:])}")
    x, y = a.double(), b.double()
    c = x.shape[1]
    # skimage filters with edge padding, then drops a border of the window radius: exactly the positions a 'valid'
    # filter produces, so no padding is needed. Separable filtering as two banded-matrix products: exact in
    # float64 and several times faster on CPU than a float64 depthwise conv2d.
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    out = _band(x.shape[-2], w).T @ stack @ _band(x.shape[-1], w)
    ux, uy, uxx, uyy, uxy = out.split(c, dim=1)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy  # population covariance (Wang et al.)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)
