"""Multi-crop views and iBOT block masks: shapes, order, exactness against pooling, crop and mask statistics."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import RandomResizedCrop

from vtp.config import AugConfig
from vtp.data.views import MultiCropViews, block_masks, crop_boxes


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def flat_colours(b: int, size: int) -> torch.Tensor:
    """Image i is one flat colour, so any crop of it shows which image it came from."""
    values = torch.linspace(-0.9, 0.9, b)
    return values.view(b, 1, 1, 1).expand(b, 3, size, size).clone()


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_shapes_order_and_device(device):
    aug = AugConfig(global_crop_size=32, local_crop_size=16, local_crops=3)
    images = flat_colours(4, 48).to(device)
    out = MultiCropViews(aug, patch=8)(images, gen())
    assert out["global_crops"].shape == (8, 3, 32, 32) and out["local_crops"].shape == (12, 3, 16, 16)
    assert out["masks"].shape == (8, 16) and out["masks"].dtype == torch.bool
    assert {t.device.type for t in out.values()} == {device}
    expected = images[:, 0, 0, 0]
    assert torch.allclose(out["global_crops"].mean((1, 2, 3)), expected.repeat(2), atol=1e-5)
    assert torch.allclose(out["local_crops"].mean((1, 2, 3)), expected.repeat(3), atol=1e-5)
    assert MultiCropViews(AugConfig(local_crops=0), 8)(images, gen())["local_crops"] is None


def test_same_generator_same_views_and_another_differs():
    views = MultiCropViews(AugConfig(), patch=8)
    images = torch.rand(3, 3, 64, 64) * 2 - 1
    a, b, c = views(images, gen(1)), views(images, gen(1)), views(images, gen(2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["global_crops"], c["global_crops"])


def test_full_crop_is_exact_and_a_half_size_crop_is_2x2_average_pooling():
    images = torch.rand(5, 3, 32, 32) * 2 - 1
    whole = dict(global_crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), local_crops=0)
    same = MultiCropViews(AugConfig(global_crop_size=32, hflip=False, **whole), 8)(images, gen())
    assert torch.allclose(same["global_crops"], images.repeat(2, 1, 1, 1), atol=1e-6)
    half = MultiCropViews(AugConfig(global_crop_size=16, hflip=False, **whole), 8)(images, gen())
    assert torch.allclose(half["global_crops"], F.avg_pool2d(images, 2).repeat(2, 1, 1, 1), atol=1e-6)
    flipped = MultiCropViews(AugConfig(global_crop_size=32, **whole), 8)(images.repeat(8, 1, 1, 1), gen())
    crops, ref = flipped["global_crops"], images.repeat(16, 1, 1, 1)
    is_flip = [torch.allclose(c, r.flip(-1), atol=1e-6) for c, r in zip(crops, ref, strict=True)]
    is_same = [torch.allclose(c, r, atol=1e-6) for c, r in zip(crops, ref, strict=True)]
    assert all(f or s for f, s in zip(is_flip, is_same, strict=True)) and 0 < sum(is_flip) < len(crops)


@pytest.mark.parametrize("scale", [(0.05, 0.32), (0.32, 1.0), (0.9, 1.0)])
def test_crop_boxes_follow_random_resized_crop(scale):
    """Reference: torchvision's RandomResizedCrop.get_params on a 64 x 48 image (integer boxes)."""
    ratio = (3 / 4, 4 / 3)
    boxes = crop_boxes(2000, 48, 64, scale, ratio, gen())
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 64 + 1e-4).all() and (boxes[:, 3] <= 48 + 1e-4).all()
    area = w * h / (64 * 48)
    torch.manual_seed(0)
    ref = torch.tensor([hh * ww / (64 * 48) for _, _, hh, ww in
                        (RandomResizedCrop.get_params(torch.empty(3, 48, 64), list(scale), list(ratio))
                         for _ in range(2000))])
    assert abs(area.mean() - ref.mean()) < 0.02 and abs(area.std() - ref.std()) < 0.02
    fitted = (area >= scale[0] - 1e-5) & (area <= scale[1] + 1e-5)
    aspect = w / h
    assert ((aspect >= ratio[0] - 1e-4) & (aspect <= ratio[1] + 1e-4))[fitted].all()


def test_block_masks_counts_follow_probability_and_ratio_range():
    masks = block_masks(100, 8, 0.5, (0.1, 0.5), gen())
    counts = masks.sum(1)
    masked = counts[counts > 0].sort().values
    assert masks.shape == (100, 64) and len(masked) == 50
    assert masked.min() >= int(0.1 * 64) and masked.max() <= int(0.5 * 64)
    # Stratified: the 50 ratios cover the range evenly, so the i-th smallest lies in the i-th sub-interval.
    edges = torch.linspace(0.1, 0.5, 51)
    assert ((masked >= (edges[:-1] * 64).long()) & (masked <= (edges[1:] * 64).long())).all()
    assert block_masks(10, 8, 0.0, (0.1, 0.5), gen()).sum() == 0
    assert (block_masks(10, 8, 1.0, (0.3, 0.3), gen()).sum(1) == int(0.3 * 64)).all()
    assert torch.equal(block_masks(6, 8, 0.5, (0.1, 0.5), gen(3)), block_masks(6, 8, 0.5, (0.1, 0.5), gen(3)))


def _neighbour_fraction(masks: torch.Tensor, grid: int) -> float:
    """Share of masked patches with a masked 4-neighbour."""
    m = masks.view(-1, 1, grid, grid).float()
    kernel = torch.tensor([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=torch.float).view(1, 1, 3, 3)
    near = F.conv2d(m, kernel, padding=1) > 0
    return float((near & (m > 0)).sum() / m.sum())


def test_block_masks_are_blocks_not_scattered_patches():
    grid = 14
    blocks = block_masks(200, grid, 1.0, (0.1, 0.5), gen())
    scattered = torch.zeros_like(blocks)
    for i, n in enumerate(blocks.sum(1).tolist()):
        scattered[i, torch.randperm(grid * grid, generator=gen(i))[:n]] = True
    assert _neighbour_fraction(blocks, grid) > 0.95 > _neighbour_fraction(scattered, grid) + 0.1


def test_wrong_inputs_are_named():
    with pytest.raises(ValueError, match="must be a multiple of the patch size 16"):
        MultiCropViews(AugConfig(global_crop_size=40), patch=16)
    with pytest.raises(ValueError, match=r"expected a float tensor \(B, 3, H, W\), got \(3, 32, 32\)"):
        MultiCropViews(AugConfig(), patch=8)(torch.rand(3, 32, 32), gen())


def test_rows_of_a_larger_batch_get_that_batch_views():
    """A rank holding rows 1 and 3 of a 4-image global batch gets exactly those rows' views and masks."""
    views = MultiCropViews(AugConfig(global_crop_size=32, local_crop_size=16, local_crops=2), patch=8)
    images = torch.rand(4, 3, 32, 32, generator=gen(3)) * 2 - 1
    whole = views(images, gen(7))
    rows = torch.tensor([1, 3])
    part = views(images[rows], gen(7), rows=rows, total=4)
    assert torch.equal(part["global_crops"], whole["global_crops"][torch.tensor([1, 3, 5, 7])])
    assert torch.equal(part["local_crops"], whole["local_crops"][torch.tensor([1, 3, 5, 7])])
    assert torch.equal(part["masks"], whole["masks"][torch.tensor([1, 3, 5, 7])])
    with pytest.raises(ValueError, match=r"rows: expected 2 indices in \[0, total=2\)"):
        views(images[rows], gen(7), rows=rows, total=2)
