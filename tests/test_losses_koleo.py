"""KoLeo: -mean log distance to the nearest neighbour of L2-normalised features."""
from __future__ import annotations

import math

import pytest
import torch

from vtp.losses.koleo import KoLeoLoss


def test_hand_computed():
    # normalised: (1,0), (0,1), (1,1)/sqrt2; every point's nearest neighbour is sqrt(2 - sqrt2) away
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 3.0]])
    expected = -math.log(math.sqrt(2 - math.sqrt(2)))
    assert KoLeoLoss()(x).item() == pytest.approx(expected, rel=1e-6)


def test_matches_brute_force_and_ignores_scale():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 8, generator=g)
    unit = x / x.norm(dim=1, keepdim=True)
    distances = torch.cdist(unit, unit) + torch.eye(16) * 10  # exclude each point itself
    expected = -torch.log(distances.min(dim=1).values + 1e-8).mean()
    torch.testing.assert_close(KoLeoLoss()(x), expected)
    scale = torch.rand(16, 1, generator=g) + 0.5
    torch.testing.assert_close(KoLeoLoss()(x * scale), expected)


def test_gradient_pushes_close_points_apart():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.1], [-1.0, 0.0]], requires_grad=True)
    KoLeoLoss()(x).backward()
    assert x.grad[0, 1] > 0 and x.grad[1, 1] < 0  # descent moves point 0 down, point 1 up: away from each other


def test_needs_two_rows():
    with pytest.raises(ValueError, match="B >= 2"):
        KoLeoLoss()(torch.zeros(1, 4))
