"""DINOv2-style multi-crop views (crops, flips and photometric augmentations) and iBOT block masks, batched on
whatever device the images are on.

All randomness comes from the `generator` argument (parameters are drawn on the generator's device, a fixed
number of draws per call), so a rank or a resumed run that passes an equally seeded generator gets the same
views. Images are float (B, 3, H, W) in [-1, 1] and come back in that range.
"""
from __future__ import annotations

import math

import torch
from torchvision.ops import roi_align

from vtp.config import AugConfig
from vtp.data import photometric

MASK_ASPECT = (0.3, 1 / 0.3)  # block aspect-ratio range of DINOv2's masking generator
MASK_BLOCKS = 32  # rectangles drawn per masked image; their union is trimmed to the exact target count
CROP_TRIES = 10  # RandomResizedCrop's rejection-sampling attempts before its centre-crop fallback


def crop_boxes(n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
               generator: torch.Generator) -> torch.Tensor:
    """(n, 4) float boxes x0, y0, x1, y1 in pixels, RandomResizedCrop's distribution without integer rounding:
    area fraction ~ U(scale), log aspect ~ U(log ratio), first of 10 tries that fits, else a centre crop."""
    dev = generator.device
    area = height * width
    s = scale[0] + (scale[1] - scale[0]) * torch.rand(n, CROP_TRIES, generator=generator, device=dev)
    lr = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(
        n, CROP_TRIES, generator=generator, device=dev)
    w, h = torch.sqrt(s * area * lr.exp()), torch.sqrt(s * area / lr.exp())
    fits = (w <= width) & (h <= height)
    first = fits.int().argmax(dim=1, keepdim=True)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    # Fallback (no try fitted): the largest centred crop whose aspect lies inside `ratio`.
    aspect = min(max(width / height, ratio[0]), ratio[1])
    fw, fh = min(width, height * aspect), min(height, width / aspect)
    ok = fits.any(dim=1)
    w, h = torch.where(ok, w, torch.full_like(w, fw)), torch.where(ok, h, torch.full_like(h, fh))
    u = torch.rand(n, 2, generator=generator, device=dev)
    x0 = torch.where(ok, u[:, 0] * (width - w), (width - w) / 2)
    y0 = torch.where(ok, u[:, 1] * (height - h), (height - h) / 2)
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)


def block_masks(n: int, grid: int, probability: float, ratio_range: tuple[float, float],
                generator: torch.Generator, min_block: int = 4) -> torch.Tensor:
    """(n, grid*grid) bool on the generator's device: iBOT targets.

    As in DINOv2, int(n * probability) images are masked, the i-th of them with a ratio drawn from the i-th of
    equal sub-intervals of `ratio_range` (stratified), the rest not at all; which images is random. A masked
    image gets exactly int(ratio * grid^2) patches: the union of random rectangles (area >= min_block, aspect in
    [0.3, 3.3]) taken while it fits, the next rectangle trimmed in raster order to reach the count.
    """
    dev, cells = generator.device, grid * grid
    out = torch.zeros(n, cells, dtype=torch.bool, device=dev)
    m = int(n * probability)
    which = torch.randperm(n, generator=generator, device=dev)[:m]
    if m == 0:
        return out
    edges = torch.linspace(ratio_range[0], ratio_range[1], m + 1, device=dev)
    ratio = edges[:-1] + (edges[1:] - edges[:-1]) * torch.rand(m, generator=generator, device=dev)
    target = (ratio * cells).long()  # (m,)
    r = torch.rand(m, MASK_BLOCKS, 4, generator=generator, device=dev)
    area = min_block + r[..., 0] * (target[:, None] - min_block).clamp(min=0)
    log_aspect = math.log(MASK_ASPECT[0]) + r[..., 1] * (math.log(MASK_ASPECT[1]) - math.log(MASK_ASPECT[0]))
    h = torch.sqrt(area * log_aspect.exp()).round().clamp(1, grid)
    w = torch.sqrt(area / log_aspect.exp()).round().clamp(1, grid)
    top, left = (r[..., 2] * (grid - h + 1)).floor(), (r[..., 3] * (grid - w + 1)).floor()
    idx = torch.arange(grid, device=dev, dtype=h.dtype)
    rows = (idx >= top[..., None]) & (idx < (top + h)[..., None])  # (m, K, grid)
    cols = (idx >= left[..., None]) & (idx < (left + w)[..., None])
    rects = (rows[..., :, None] & cols[..., None, :]).flatten(2)  # (m, K, cells)
    union = torch.cummax(rects.to(torch.uint8), dim=1).values.bool()  # union of the first k+1 rectangles
    taken = (union.sum(-1) <= target[:, None]).sum(1)  # rectangles whose union stays within the target
    rows_m = torch.arange(m, device=dev)
    base = torch.where((taken > 0)[:, None], union[rows_m, (taken - 1).clamp(min=0)], False)
    need = target - base.sum(-1)
    nxt = rects[rows_m, taken.clamp(max=MASK_BLOCKS - 1)] & ~base & (taken < MASK_BLOCKS)[:, None]
    extra = nxt & (nxt.cumsum(-1) <= need[:, None])
    mask = base | extra
    # Top-up with random free patches, only if all rectangles together stayed below the target (rare).
    need = target - mask.sum(-1)
    score = torch.rand(m, cells, generator=generator, device=dev).masked_fill(mask, 2.0)
    rank = score.argsort(-1).argsort(-1)
    mask |= rank < need[:, None]
    out[which] = mask
    return out


class MultiCropViews:
    """2 global + `aug.local_crops` local RandomResizedCrop-style crops with flips, DINOv2's photometric
    augmentations (`aug.photometric`; vtp.data.photometric), and block masks for the global crops (one mask per
    global crop, over its (G/patch)^2 patches)."""

    def __init__(self, aug: AugConfig, patch: int):
        for name in ("global_crop_size", "local_crop_size"):
            if getattr(aug, name) % patch:
                raise ValueError(f"aug.{name} = {getattr(aug, name)}: must be a multiple of the patch size {patch}")
        self.aug, self.patch = aug, patch

    def crops(self, images: torch.Tensor, views: int, size: int, scale: tuple[float, float],
              generator: torch.Generator, rows: torch.Tensor, total: int) -> torch.Tensor:
        """(views * B, 3, size, size) ordered [view 0 of all B, view 1 of all B, ...]."""
        b, _, height, width = images.shape
        boxes = crop_boxes(views * total, height, width, scale, self.aug.crop_ratio, generator)
        flip = torch.rand(views * total, generator=generator, device=generator.device) < (
            0.5 if self.aug.hflip else 0)
        pick = (torch.arange(views, device=rows.device)[:, None] * total + rows).flatten()  # this call's draws
        boxes, flip = boxes[pick], flip[pick]
        owner = torch.arange(b, device=generator.device).repeat(views)
        rois = torch.cat([owner[:, None].to(boxes.dtype), boxes], dim=1).to(images.device)
        # roi_align with adaptive sampling averages ceil(box/size)^2 bilinear samples per output pixel: a crop
        # and an anti-aliased resize in one batched op on any device.
        out = roi_align(images.float(), rois, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        out = torch.where(flip.to(images.device)[:, None, None, None], out.flip(-1), out)
        return out.to(images.dtype)

    def photometric(self, crops: torch.Tensor, views: int, blur_p: tuple[float, ...], solarize_p: tuple[float, ...],
                    generator: torch.Generator, rows: torch.Tensor, total: int) -> torch.Tensor:
        """Photometric augmentation of `crops` as ordered by `crops`, parameters drawn for views * total."""
        u = photometric.draw(views * total, generator)
        pick = (torch.arange(views, device=rows.device)[:, None] * total + rows).flatten()
        per_view = [torch.tensor(p, device=crops.device).repeat_interleave(len(rows)) for p in (blur_p, solarize_p)]
        return photometric.augment(crops, u[pick], self.aug, *per_view)

    def __call__(self, images: torch.Tensor, generator: torch.Generator, rows: torch.Tensor | None = None,
                 total: int | None = None) -> dict:
        """Views of `images`. With `rows`/`total`, the random parameters are drawn for a batch of `total`
        images and `images` are rows `rows` of it: every rank of a data-parallel run draws the same parameters
        for the global batch and applies its own rows, so the views do not depend on the number of ranks."""
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"images: expected a float tensor (B, 3, H, W), got {tuple(images.shape)} "
                             f"{images.dtype}")
        a = self.aug
        b = images.shape[0]
        if rows is None:
            rows, total = torch.arange(b), b
        rows = rows.to(generator.device)
        if rows.shape != (b,) or total is None or not (0 <= int(rows.min()) and int(rows.max()) < total):
            raise ValueError(f"rows: expected {b} indices in [0, total={total}), got {rows.tolist()}")
        global_crops = self.crops(images, 2, a.global_crop_size, a.global_crop_scale, generator, rows, total)
        local_crops = (self.crops(images, a.local_crops, a.local_crop_size, a.local_crop_scale, generator, rows,
                                  total) if a.local_crops else None)
        grid = a.global_crop_size // self.patch
        masks = block_masks(2 * total, grid, a.mask_probability, a.mask_ratio, generator, a.mask_min_block)
        masks = masks[torch.cat([rows, rows + total])]
        if a.photometric:  # drawn after the crops and masks, which are therefore the same with it off
            global_crops = self.photometric(global_crops, 2, (a.blur_p[0], a.blur_p[1]), (0.0, a.solarize_p),
                                            generator, rows, total)
            if a.local_crops:
                local_crops = self.photometric(local_crops, a.local_crops, (a.blur_p[2],) * a.local_crops,
                                               (0.0,) * a.local_crops, generator, rows, total)
        return {"global_crops": global_crops, "local_crops": local_crops, "masks": masks.to(images.device)}
