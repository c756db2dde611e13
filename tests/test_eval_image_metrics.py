"""PSNR / SSIM against skimage, and the direction of every pixel metric under controlled corruption."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from vtp.data.synthetic import sample
from vtp.eval.grids import error_map, save_grid
from vtp.eval.image_metrics import from_uint8, psnr, ssim, to_uint8


def shapes(n: int, res: int = 48) -> torch.Tensor:
    """uint8 (n, 3, res, res) synthetic scenes."""
    return torch.from_numpy(np.stack([sample(0, "val", i, res)[0] for i in range(n)])).permute(0, 3, 1, 2)


def noisy(images: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (images.float() + sigma * torch.randn(images.shape, generator=g)).clamp(0, 255).round().to(torch.uint8)


def blur(images: torch.Tensor, k: int) -> torch.Tensor:
    """Box blur in [-1, 1] space (what a lossy tokenizer does to detail)."""
    x = from_uint8(images)
    return to_uint8(F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="replicate"), k, stride=1))


@pytest.mark.parametrize("sigma", [3.0, 25.0])
def test_psnr_and_ssim_equal_skimage(sigma):
    a = shapes(4, 40)
    b = noisy(a, sigma)
    ours_p, ours_s = psnr(a.float(), b.float()), ssim(a.float(), b.float())
    for i in range(len(a)):
        x, y = a[i].numpy(), b[i].numpy()
        assert ours_p[i].item() == pytest.approx(peak_signal_noise_ratio(x, y, data_range=255), abs=1e-9)
        ref = structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=255, channel_axis=0)
        assert ours_s[i].item() == pytest.approx(ref, abs=1e-9)


def test_ssim_equals_skimage_on_non_square_float_images():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 3, 23, 37, generator=g, dtype=torch.float64)
    b = (a + 0.1 * torch.randn(a.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    ours = ssim(a, b, data_range=1.0)
    for i in range(2):
        ref = structural_similarity(a[i].numpy(), b[i].numpy(), gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=1.0, channel_axis=0)
        assert ours[i].item() == pytest.approx(ref, abs=1e-9)


def test_identical_images_are_perfect():
    a = shapes(2)
    assert torch.isinf(psnr(a.float(), a.float())).all()
    assert torch.allclose(ssim(a.float(), a.float()), torch.ones(2, dtype=torch.float64))


def test_blur_lowers_psnr_and_ssim_monotonically():
    a = shapes(6)
    mild, strong = blur(a, 3), blur(a, 7)
    for metric in (psnr, ssim):
        m, s = metric(a.float(), mild.float()).mean(), metric(a.float(), strong.float()).mean()
        assert s < m, metric.__name__


def test_blur_raises_lpips():
    from vtp.losses.lpips import LPIPS

    lpips = LPIPS("vgg")
    a = shapes(4)
    with torch.no_grad():
        d_mild = lpips(from_uint8(a), from_uint8(blur(a, 3))).mean()
        d_strong = lpips(from_uint8(a), from_uint8(blur(a, 7))).mean()
        d_same = lpips(from_uint8(a), from_uint8(a)).mean()
    assert d_same.item() == pytest.approx(0.0, abs=1e-6)
    assert d_same < d_mild < d_strong


def test_uint8_round_trip_and_clamping():
    a = shapes(2)
    assert torch.equal(to_uint8(from_uint8(a)), a)
    assert to_uint8(torch.tensor([-3.0, -1.0, 0.0, 1.0, 5.0])).tolist() == [0, 0, 128, 255, 255]
    with pytest.raises(TypeError, match="float"):
        to_uint8(a)
    with pytest.raises(TypeError, match="uint8"):
        from_uint8(a.float())


def test_bad_shapes_are_named():
    a = shapes(2).float()
    with pytest.raises(ValueError, match="same shape"):
        psnr(a, a[:1])
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(a[..., :8, :8], a[..., :8, :8])


def test_grid_layout_and_error_map(tmp_path):
    a = shapes(5, 32)
    b = blur(a, 5)
    assert torch.equal(error_map(a, a), torch.zeros_like(a))
    path = save_grid(a, b, tmp_path / "g.png", per_row=2)
    from PIL import Image

    img = np.asarray(Image.open(path))
    # 3 rows of 2 triplets (5 images), 32 px tiles with 2 px padding around each.
    assert img.shape == (3 * 34 + 2, 6 * 34 + 2, 3)
    assert np.array_equal(img[2:34, 2:34], a[0].permute(1, 2, 0).numpy())
    assert np.array_equal(img[2:34, 36:68], b[0].permute(1, 2, 0).numpy())
