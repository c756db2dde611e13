"""KL of a diagonal Gaussian from N(0, I): per-sample sum, batch mean."""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal
from torch.distributions import kl_divergence as torch_kl

from vtp.losses.kl import kl_divergence


def test_hand_computed():
    # sample 0: elements (mean 1, var 1) -> 0.5 and (mean 2, var 2) -> 0.5 * (4 + 2 - 1 - ln 2); sample 1: N(0,1) -> 0
    mean = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    expected = (0.5 + 0.5 * (5.0 - math.log(2.0)) + 0.0) / 2
    assert kl_divergence(mean, logvar).item() == pytest.approx(expected, rel=1e-6)


def test_matches_torch_distributions_on_latent_maps():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(3, 4, 5, 5, generator=g), torch.randn(3, 4, 5, 5, generator=g)
    reference = torch_kl(Normal(mean, (0.5 * logvar).exp()), Normal(0.0, 1.0)).flatten(1).sum(1).mean()
    torch.testing.assert_close(kl_divergence(mean, logvar), reference)


def test_shape_errors():
    with pytest.raises(ValueError, match="same \\(B, ...\\) shape"):
        kl_divergence(torch.zeros(2, 3), torch.zeros(2, 4))
