"""Stage-2 GAN: patch discriminator, hinge losses, generator weight schedule."""
from __future__ import annotations

import pytest
import torch

from vtp.losses.gan import Discriminator, adversarial_weight, hinge_d_loss, hinge_g_loss


def test_hinge_losses_hand_computed():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - real) = 0, 0.5, 2
    fake = torch.tensor([-2.0, 0.0, 1.0])  # relu(1 + fake) = 0, 1, 2
    assert hinge_d_loss(real, fake).item() == pytest.approx(2.5 / 3 + 1.0)
    assert hinge_g_loss(fake).item() == pytest.approx(1.0 / 3)


def test_adversarial_weight_schedule():
    w = [adversarial_weight(step, start=10, warmup=4, weight=0.5) for step in (0, 9, 10, 11, 12, 14, 100)]
    assert w == [0.0, 0.0, 0.0, 0.125, 0.25, 0.5, 0.5]
    assert adversarial_weight(10, start=10, warmup=0, weight=0.5) == 0.5
    with pytest.raises(ValueError, match=">= 0"):
        adversarial_weight(0, start=-1, warmup=0, weight=0.5)


def test_discriminator_shapes_and_errors():
    d = Discriminator(width=8, blocks=3)
    assert d(torch.zeros(2, 3, 16, 16)).shape == (2, 1, 2, 2)
    assert d(torch.zeros(1, 3, 64, 48)).shape == (1, 1, 8, 6)
    with pytest.raises(ValueError, match="H, W >= 16"):
        d(torch.zeros(1, 3, 8, 16))
    assert max(c.out_channels for c in d.modules() if isinstance(c, torch.nn.Conv2d)) == 64  # capped at 8 * width


def test_spectral_norm_bounds_every_conv():
    d = Discriminator(width=8, blocks=2)
    for _ in range(30):  # power iterations run in training-mode forwards
        d(torch.randn(1, 3, 8, 8))
    d.eval()
    for m in d.modules():
        if isinstance(m, torch.nn.Conv2d):
            sigma = torch.linalg.matrix_norm(m.weight.flatten(1), ord=2)
            assert sigma.item() == pytest.approx(1.0, abs=0.05)


def test_discriminator_learns_to_separate_real_from_fake():
    torch.manual_seed(0)
    d = Discriminator(width=8, blocks=2)
    opt = torch.optim.Adam(d.parameters(), lr=5e-3, betas=(0.0, 0.99))
    real = torch.rand(4, 3, 8, 8) * 0.2 + 0.5  # bright, smooth
    fake = torch.rand(4, 3, 8, 8) * 2 - 1  # noise
    first = hinge_d_loss(d(real), d(fake)).item()
    for _ in range(10):
        loss = hinge_d_loss(d(real), d(fake))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    fake.requires_grad_()
    hinge_g_loss(d(fake)).backward()
    assert fake.grad.abs().sum() > 0  # the generator gets a gradient through the discriminator
