"""DINOv2's photometric augmentations of the SSL views, batched with one parameter per sample.

Per view, in DINOv2's order (`dinov2/data/augmentations.py`): colour jitter (brightness, contrast, saturation, hue
in a random order per sample, as torchvision's ColorJitter) with probability `color_jitter_p`, grayscale with
`grayscale_p`, Gaussian blur with `blur_p` (first global, second global, local views) and, on the second global
view only, solarisation with `solarize_p` at 128/255. Each op follows the definition of its torchvision
functional (`adjust_brightness`: multiply; `adjust_contrast`: blend with the mean of the grayscale image;
`adjust_saturation`: blend with the grayscale image; `adjust_hue`: rotate the hue in HSV; `rgb_to_grayscale`;
`gaussian_blur` with reflect padding; `solarize`), clamped to [0, 1] like torchvision's float ops.
torchvision's functionals take one scalar parameter per call, so the ops here are small tensor code taking an
(n,) parameter per sample; the tests check each against torchvision's functional on single images.

Blur scale: DINOv2 blurs 224-px global crops (and its 96-px local crops) with sigma ~ U[0.1, 2] px and a
9-tap kernel, i.e. +-2 sigma_max. Our crops are smaller, so the sigma range is scaled by
global_crop_size / blur_reference_size (the same factor for global and local views, as in DINOv2) and the
kernel covers +-2 scaled sigma_max (9 taps at 224 px; 5 at 64 px), capped by the crop size.

All parameters come from `draw(n, generator)`: a fixed (n, DRAWS) block of uniforms per view group, so every
knob reads its own column and disabling one op does not shift the others' randomness.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vtp.config import AugConfig

GRAY = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale
SOLARIZE_THRESHOLD = 128 / 255  # DINOv2's RandomSolarize(threshold=128) on uint8 images
DRAWS = 13  # columns: jitter?, 4 factors, 4 order keys, gray?, blur?, sigma, solarize?


def draw(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, DRAWS, generator=generator, device=generator.device)


def _col(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def rgb_to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """(n, 1, H, W) luma of (n, 3, H, W)."""
    return (GRAY[0] * x[:, 0] + GRAY[1] * x[:, 1] + GRAY[2] * x[:, 2]).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor | float, f: torch.Tensor) -> torch.Tensor:
    f = _col(f)
    return (x * f + other * (1 - f)).clamp(0, 1)


def adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * _col(f)).clamp(0, 1)


def adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, rgb_to_grayscale(x).mean((1, 2, 3), keepdim=True), f)


def adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, rgb_to_grayscale(x), f)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by `shift` turns: RGB -> HSV (hexcone), h += shift mod 1, HSV -> RGB."""
    r, g, b = x.unbind(1)
    v, lo = x.amax(1), x.amin(1)
    chroma = v - lo
    grey = chroma == 0
    s = chroma / torch.where(grey, 1.0, v)
    c = torch.where(grey, 1.0, chroma)
    h = torch.where(v == r, (g - b) / c, torch.where(v == g, (b - r) / c + 2, (r - g) / c + 4))
    h6 = (h / 6 + shift.view(-1, 1, 1)).remainder(1.0) * 6
    # f(n) = v - v s clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6, gives R, G, B for n = 5, 3, 1.
    k = (torch.tensor([5.0, 3.0, 1.0], device=x.device, dtype=x.dtype).view(1, 3, 1, 1) + h6[:, None]).remainder(6)
    return v[:, None] - (v * s)[:, None] * torch.minimum(k, 4 - k).clamp(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Blur sample i with a (2 radius + 1)-tap Gaussian of std sigma[i] px, reflect-padded, as a separable
    grouped convolution (one kernel per sample and channel)."""
    n, c, h, w = x.shape
    taps = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.softmax(-0.5 * (taps / sigma.to(x.dtype)[:, None]) ** 2, dim=1).repeat_interleave(c, 0)
    y = F.pad(x.reshape(1, n * c, h, w), [radius] * 4, mode="reflect")
    y = F.conv2d(y, kernel[:, None, None, :], groups=n * c)
    return F.conv2d(y, kernel[:, None, :, None], groups=n * c).reshape(n, c, h, w)


def solarize(x: torch.Tensor, threshold: float = SOLARIZE_THRESHOLD) -> torch.Tensor:
    return torch.where(x >= threshold, 1 - x, x)


def _rows(x: torch.Tensor, sel: torch.Tensor, fn, *params: torch.Tensor) -> torch.Tensor:
    """x with fn applied to the rows where `sel`, run on those rows only (a gather and a scatter)."""
    idx = sel.nonzero().squeeze(1)
    return x.index_copy(0, idx, fn(x[idx], *(p[idx] for p in params))) if len(idx) else x


def color_jitter(x: torch.Tensor, u: torch.Tensor, strength: tuple[float, float, float, float],
                 apply: torch.Tensor) -> torch.Tensor:
    """torchvision's ColorJitter per sample where `apply`: factors U[max(0, 1 - s), 1 + s] (hue U[-s, s]) from
    u[:, 1:5], the four ops in the random order argsort(u[:, 5:9]); an op of strength 0 is skipped. At step k
    every sample runs its k-th op, each op on its own rows only."""
    lo = torch.tensor([max(0.0, 1 - s) for s in strength[:3]] + [-strength[3]], device=u.device)
    hi = torch.tensor([1 + s for s in strength[:3]] + [strength[3]], device=u.device)
    factors = lo + (hi - lo) * u[:, 1:5]
    order = torch.where(apply[:, None], u[:, 5:9].argsort(1), -1)
    ops = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
    for step in range(4):
        for op, fn in enumerate(ops):
            if strength[op] > 0:
                x = _rows(x, order[:, step] == op, fn, factors[:, op])
    return x


def blur_radius(aug: AugConfig, crop_size: int) -> int:
    """Half-width of the blur kernel: +-2 scaled sigma_max (DINOv2: 4, a 9-tap kernel at 224 px), < crop_size."""
    return max(1, min(math.ceil(2 * aug.blur_sigma[1] * aug.global_crop_size / aug.blur_reference_size),
                      crop_size - 1))


def augment(views: torch.Tensor, u: torch.Tensor, aug: AugConfig, blur_p: torch.Tensor,
            solarize_p: torch.Tensor) -> torch.Tensor:
    """Photometric augmentation of views (n, 3, S, S) in [-1, 1] with draws u (n, DRAWS) and per-view
    blur/solarise probabilities (n,); returns the views in [-1, 1], computed in float32."""
    u, blur_p, solarize_p = (t.to(views.device) for t in (u, blur_p, solarize_p))
    x = ((views.float() + 1) / 2).clamp(0, 1)
    if aug.color_jitter_p > 0 and max(aug.color_jitter) > 0:
        x = color_jitter(x, u, aug.color_jitter, u[:, 0] < aug.color_jitter_p)
    x = torch.where(_col(u[:, 9] < aug.grayscale_p), rgb_to_grayscale(x).expand_as(x), x)
    if max(aug.blur_p) > 0:
        blur = u[:, 10] < blur_p
        scale = aug.global_crop_size / aug.blur_reference_size
        sigma = scale * (aug.blur_sigma[0] + (aug.blur_sigma[1] - aug.blur_sigma[0]) * u[:, 11])
        radius = blur_radius(aug, views.shape[-1])
        x = _rows(x, blur, lambda v, sd: gaussian_blur(v, sd, radius), sigma)
    x = torch.where(_col(u[:, 12] < solarize_p), solarize(x), x)
    return (x * 2 - 1).to(views.dtype)
