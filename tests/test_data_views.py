"""Multi-crop views and iBOT block masks: shapes, order, exactness against pooling, crop and mask statistics;
the photometric augmentations against torchvision's functionals and transforms."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import RandomResizedCrop

from vtp.config import AugConfig, ConfigError, load_config
from vtp.data import photometric as P
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
    aug = AugConfig(global_crop_size=32, local_crop_size=16, local_crops=3, photometric=False)
    images = flat_colours(4, 48).to(device)
    out = MultiCropViews(aug, patch=8)(images, gen())
    assert out["global_crops"].shape == (8, 3, 32, 32) and out["local_crops"].shape == (12, 3, 16, 16)
    assert out["masks"].shape == (8, 16) and out["masks"].dtype == torch.bool
    assert {t.device.type for t in out.values()} == {device}
    expected = images[:, 0, 0, 0]
    assert torch.allclose(out["global_crops"].mean((1, 2, 3)), expected.repeat(2), atol=1e-5)
    assert torch.allclose(out["local_crops"].mean((1, 2, 3)), expected.repeat(3), atol=1e-5)
    assert MultiCropViews(AugConfig(local_crops=0), 8)(images, gen())["local_crops"] is None
    on = MultiCropViews(aug.model_copy(update={"photometric": True}), patch=8)(images, gen())
    assert on["global_crops"].device.type == device and on["global_crops"].shape == (8, 3, 32, 32)
    assert on["global_crops"].min() >= -1 and on["global_crops"].max() <= 1


def test_same_generator_same_views_and_another_differs():
    views = MultiCropViews(AugConfig(), patch=8)  # photometric on (the default)
    images = torch.rand(3, 3, 64, 64) * 2 - 1
    a, b, c = views(images, gen(1)), views(images, gen(1)), views(images, gen(2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["global_crops"], c["global_crops"])


def test_full_crop_is_exact_and_a_half_size_crop_is_2x2_average_pooling():
    images = torch.rand(5, 3, 32, 32) * 2 - 1
    whole = dict(global_crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), local_crops=0, photometric=False)
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
    """A rank holding rows 1 and 3 of a 4-image global batch gets exactly those rows' views (photometric
    augmentations included: the default) and masks."""
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


# ---- photometric augmentations ----------------------------------------------------------------------------

def only(**ops) -> AugConfig:
    """Small views with every photometric op off except those given."""
    off = dict(color_jitter_p=0.0, grayscale_p=0.0, blur_p=(0.0, 0.0, 0.0), solarize_p=0.0)
    return AugConfig(**{"global_crop_size": 16, "local_crop_size": 8, "local_crops": 1, **off, **ops})


OPS = {  # name: (ours on a batch with one parameter per sample, torchvision's functional on one image, parameter)
    "brightness": (P.adjust_brightness, TF.adjust_brightness, lambda u: 0.3 + 1.4 * u),
    "contrast": (P.adjust_contrast, TF.adjust_contrast, lambda u: 0.3 + 1.4 * u),
    "saturation": (P.adjust_saturation, TF.adjust_saturation, lambda u: 0.3 + 1.4 * u),
    "hue": (P.adjust_hue, TF.adjust_hue, lambda u: u - 0.5),
    "grayscale": (lambda x, _: P.rgb_to_grayscale(x).expand_as(x), lambda x, _: TF.rgb_to_grayscale(x, 3), None),
    "blur": (lambda x, s: P.gaussian_blur(x, s, 4), lambda x, s: TF.gaussian_blur(x, [9, 9], [s, s]),
             lambda u: 0.1 + 1.9 * u),
    "solarize": (lambda x, _: P.solarize(x), lambda x, _: TF.solarize(x, 128 / 255), None),
}


@pytest.mark.parametrize("name", list(OPS))
def test_each_op_equals_torchvision_functional(name):
    ours, ref, param = OPS[name]
    x = torch.rand(8, 3, 20, 20, generator=gen(1))
    x[0] = x[0, :1]  # a grey image (hue and saturation undefined)
    x[1, :, :5] = 1.0  # saturated pixels
    p = param(torch.rand(8, generator=gen(2))) if param else torch.zeros(8)
    expected = torch.stack([ref(img, float(q)) for img, q in zip(x, p, strict=True)])
    assert torch.allclose(ours(x, p), expected, atol=1e-5)


def test_augment_replays_dinov2_per_view_pipeline_in_torchvision():
    """Each view: ColorJitter's four ops in the drawn order with the drawn factors, grayscale, blur, solarise."""
    aug = AugConfig(global_crop_size=16, blur_reference_size=16)  # sigma in px of these crops: kernel 9
    views = torch.rand(48, 3, 16, 16, generator=gen(4)) * 2 - 1
    u = P.draw(48, gen(5))
    half = torch.full((48,), 0.5)
    out = P.augment(views, u, aug, half, half)
    fns = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    lo, hi = torch.tensor([0.6, 0.6, 0.8, -0.1]), torch.tensor([1.4, 1.4, 1.2, 0.1])
    for view, r, got in zip(views, u, out, strict=True):
        img = (view + 1) / 2
        if r[0] < 0.8:
            factors = lo + (hi - lo) * r[1:5]
            for op in r[5:9].argsort().tolist():
                img = fns[op](img, float(factors[op]))
        img = TF.rgb_to_grayscale(img, 3) if r[9] < 0.2 else img
        img = TF.gaussian_blur(img, [9, 9], [float(0.1 + 1.9 * r[11])] * 2) if r[10] < 0.5 else img
        img = TF.solarize(img, 128 / 255) if r[12] < 0.5 else img
        assert torch.allclose(got, img * 2 - 1, atol=1e-5)


def _altered(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).abs().amax((1, 2, 3)) > 1e-3


@pytest.mark.parametrize("ops, transform, expected", [
    (dict(color_jitter_p=0.8), lambda p: T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8), (0.8, 0.8, 0.8)),
    (dict(grayscale_p=0.2), lambda p: T.RandomGrayscale(0.2), (0.2, 0.2, 0.2)),
    (dict(blur_p=(1.0, 0.1, 0.5), blur_reference_size=16),
     lambda p: T.RandomApply([T.GaussianBlur(9, (0.1, 2.0))], p=p), None),  # sigma ~ 0.1 px changes nothing
    (dict(solarize_p=0.2), lambda p: T.RandomSolarize(128 / 255, p=p), (0.0, 0.2, 0.0)),
])
def test_fraction_of_views_each_op_alters_matches_torchvision(ops, transform, expected):
    """Per view group (global 1, global 2, local): the share of views an op changes, ours vs torchvision's
    transform applied view by view to the same crops."""
    n, aug = 1000, only(**ops)
    images = torch.rand(n, 3, 16, 16, generator=gen(6)) * 2 - 1
    on = MultiCropViews(aug, 8)(images, gen(7))
    off = MultiCropViews(aug.model_copy(update={"photometric": False}), 8)(images, gen(7))
    groups = [(on["global_crops"][:n], off["global_crops"][:n]), (on["global_crops"][n:], off["global_crops"][n:]),
              (on["local_crops"], off["local_crops"])]
    probs = (aug.blur_p if "blur_p" in ops else (0.0, aug.solarize_p, 0.0) if "solarize_p" in ops else (None,) * 3)
    torch.manual_seed(0)
    for g, ((a, b), p) in enumerate(zip(groups, probs, strict=True)):
        t = transform(p)
        ref = torch.stack([t((v + 1) / 2) * 2 - 1 for v in b[:500]])
        ours, theirs = _altered(a, b).float().mean(), _altered(ref, b[:500]).float().mean()
        assert abs(ours - theirs) < 0.06, (g, float(ours), float(theirs))
        if expected is not None:
            assert abs(ours - expected[g]) < 0.04, (g, float(ours))


def test_brightness_factors_follow_color_jitter():
    aug = only(color_jitter=(0.4, 0.0, 0.0, 0.0), color_jitter_p=1.0)
    images = torch.zeros(2000, 3, 16, 16)  # 0.5 in [0, 1]: no factor in [0.6, 1.4] clips
    ours = ((MultiCropViews(aug, 8)(images, gen(8))["global_crops"] + 1) / 2).mean((1, 2, 3)) / 0.5
    torch.manual_seed(0)
    jitter = T.ColorJitter(brightness=0.4)
    theirs = torch.tensor([float(jitter(torch.full((3, 4, 4), 0.5)).mean()) / 0.5 for _ in range(2000)])
    assert ours.min() >= 0.6 - 1e-5 and ours.max() <= 1.4 + 1e-5
    assert abs(ours.mean() - theirs.mean()) < 0.02 and abs(ours.std() - theirs.std()) < 0.02


def test_photometric_off_is_todays_views_and_on_keeps_crops_and_masks():
    aug = AugConfig(global_crop_size=32, local_crop_size=16, local_crops=2, photometric=False)
    images = torch.rand(4, 3, 32, 32, generator=gen(3)) * 2 - 1
    views = MultiCropViews(aug, 8)
    off = views(images, gen(7))
    g, rows = gen(7), torch.arange(4)  # before photometric: global crops, local crops, masks, in that order
    assert torch.equal(off["global_crops"], views.crops(images, 2, 32, aug.global_crop_scale, g, rows, 4))
    assert torch.equal(off["local_crops"], views.crops(images, 2, 16, aug.local_crop_scale, g, rows, 4))
    assert torch.equal(off["masks"], block_masks(8, 4, aug.mask_probability, aug.mask_ratio, g, aug.mask_min_block))
    on = MultiCropViews(aug.model_copy(update={"photometric": True}), 8)(images, gen(7))
    assert torch.equal(on["masks"], off["masks"]) and not torch.allclose(on["global_crops"], off["global_crops"])
    zero = MultiCropViews(only(global_crop_size=32, local_crop_size=16, local_crops=2), 8)(images, gen(7))
    assert all(torch.allclose(zero[k], off[k], atol=1e-6) for k in ("global_crops", "local_crops"))


def test_blur_scales_with_the_global_crop_size():
    assert P.blur_radius(AugConfig(global_crop_size=224, local_crop_size=96), 224) == 4  # DINOv2's 9 taps
    assert P.blur_radius(AugConfig(global_crop_size=224, local_crop_size=96), 96) == 4  # local views alike
    assert P.blur_radius(AugConfig(global_crop_size=64), 64) == 2
    assert P.blur_radius(AugConfig(global_crop_size=16, blur_sigma=(0.1, 20.0), blur_reference_size=16), 8) == 7


@pytest.mark.parametrize("override, hint", [
    ("aug.color_jitter=[0.4,0.4,0.2,0.7]", "0 <= hue <= 0.5"),
    ("aug.color_jitter=[-0.1,0.4,0.2,0.1]", "brightness, contrast, saturation >= 0"),
    ("aug.blur_p=[1.0,1.5,0.5]", "three probabilities in [0, 1]"),
    ("aug.blur_sigma=[2.0,0.1]", "0 < min <= max"),
    ("aug.solarize_p=1.5", "less than or equal to 1"),
    ("aug.grayscale_p=-0.1", "greater than or equal to 0"),
])
def test_bad_photometric_values_name_the_field(params_file, override, hint):
    with pytest.raises(ConfigError) as err:
        load_config("vtp", [override], params_file)
    field = override.split("=")[0]
    assert field in str(err.value) and hint in str(err.value), str(err.value)
