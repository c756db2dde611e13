"""The linear flow-matching path, timestep sampling and the loss against hand computations."""
from __future__ import annotations

import math

import pytest
import torch

from vtp.diffusion.flow import flow_matching_loss, flow_matching_terms, interpolate, sample_timesteps, velocity_target


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_path_endpoints_and_velocity():
    data, noise = torch.full((2, 3, 2, 2), 5.0), torch.full((2, 3, 2, 2), -1.0)
    assert torch.equal(interpolate(data, noise, torch.zeros(2)), noise)  # t = 0: noise
    assert torch.equal(interpolate(data, noise, torch.ones(2)), data)  # t = 1: data
    mid = interpolate(data, noise, torch.tensor([0.25, 0.5]))
    assert torch.allclose(mid[0], torch.full((3, 2, 2), 0.25 * 5 - 0.75)) and torch.allclose(mid[1], torch.full(
        (3, 2, 2), 2.0))
    assert torch.equal(velocity_target(data, noise), torch.full_like(data, 6.0))  # d x_t / dt


def test_loss_matches_a_hand_computation():
    # B=1, C=2, H=1, W=2: two positions with 2-channel vectors.
    pred = torch.tensor([[[[1.0, 0.0]], [[0.0, 2.0]]]])  # position 0: (1, 0), position 1: (0, 2)
    target = torch.tensor([[[[1.0, 1.0]], [[1.0, 2.0]]]])  # position 0: (1, 1), position 1: (1, 2)
    mse = ((1 - 1) ** 2 + (0 - 1) ** 2 + (0 - 1) ** 2 + (2 - 2) ** 2) / 4
    cos0 = (1 * 1 + 0 * 1) / (1.0 * math.sqrt(2))
    cos1 = (0 * 1 + 2 * 2) / (2.0 * math.sqrt(5))
    cos = ((1 - cos0) + (1 - cos1)) / 2
    plain = flow_matching_loss(pred, target)
    both = flow_matching_loss(pred, target, cosine=True)
    assert set(both) == {"loss", "mse", "cos"}
    assert plain["mse"].item() == pytest.approx(mse) and plain["loss"].item() == pytest.approx(mse)
    assert both["cos"].item() == pytest.approx(cos, rel=1e-6)
    assert both["loss"].item() == pytest.approx(mse + cos, rel=1e-6)


def test_loss_is_zero_at_the_target_and_rejects_mismatched_shapes():
    v = torch.randn(3, 4, 2, 2, generator=gen())
    terms = flow_matching_loss(v, v.clone(), cosine=True)
    assert terms["loss"].item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="differ"):
        flow_matching_loss(v, v[:, :2])


@pytest.mark.parametrize("mu, sigma", [(0.0, 1.0), (-0.75, 1.0), (-0.5, 1.25)])
def test_lognormal_timesteps_have_the_asked_logit_statistics(mu, sigma):
    t = sample_timesteps(200_000, gen(1), "lognormal", mu, sigma).double()
    logit = torch.log(t) - torch.log1p(-t)
    assert ((t > 0) & (t < 1)).all()
    assert logit.mean().item() == pytest.approx(mu, abs=0.01)
    assert logit.std().item() == pytest.approx(sigma, rel=0.01)


def test_uniform_timesteps_and_unknown_schedule():
    t = sample_timesteps(100_000, gen(2), "uniform")
    assert t.min() >= 0 and t.max() < 1 and t.mean().item() == pytest.approx(0.5, abs=0.005)
    with pytest.raises(ValueError, match="lognormal"):
        sample_timesteps(4, gen(), "cosine")


def test_timesteps_are_a_function_of_the_generator_seed():
    assert torch.equal(sample_timesteps(8, gen(3)), sample_timesteps(8, gen(3)))
    assert not torch.equal(sample_timesteps(8, gen(3)), sample_timesteps(8, gen(4)))


def test_training_terms_compose_path_target_and_loss():
    data = torch.randn(4, 2, 2, 2, generator=gen(5))
    seen = {}

    def model_fn(x_t, t):
        seen["x_t"], seen["t"] = x_t, t
        return torch.zeros_like(x_t)

    terms = flow_matching_terms(model_fn, data, gen(6), "lognormal", -0.75, 1.0, cosine=False)
    g = gen(6)  # the same draws in the documented order: noise, then t
    noise = torch.randn(data.shape, generator=g)
    t = torch.sigmoid(-0.75 + torch.randn(4, generator=g))
    assert torch.allclose(seen["t"], t) and torch.allclose(seen["x_t"], interpolate(data, noise, t))
    assert terms["mse"].item() == pytest.approx((data - noise).square().mean().item(), rel=1e-6)
