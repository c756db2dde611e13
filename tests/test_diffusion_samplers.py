"""ODE samplers on a 2-D Gaussian mixture whose exact flow-matching velocity is known in closed form, the
timestep shift, and classifier-free guidance.

For data x1 ~ sum_k pi_k N(m_k, s^2 I), noise x0 ~ N(0, I) and x_t = t x1 + (1 - t) x0, component k gives
x_t ~ N(t m_k, v_k I) with v_k = t^2 s^2 + (1 - t)^2, and E[x1 - x0 | x_t = x, k] = m_k + (t s^2 - (1 - t)) / v_k
(x - t m_k). The marginal velocity averages these with the posterior weights w_k(x) ~ pi_k N(x; t m_k, v_k I).
"""
from __future__ import annotations

from itertools import pairwise

import pytest
import torch

from vtp.diffusion.samplers import GuidedVelocity, SamplerSpec, sample, timestep_grid

MEANS = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.0]], dtype=torch.float64)
WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
STD = 0.3
N = 4000


def mixture_velocity(x: torch.Tensor, t: torch.Tensor, component: torch.Tensor | None = None) -> torch.Tensor:
    """The exact marginal velocity; with `component` (B,), that of the single Gaussian k (a "class")."""
    x, t = x.double(), t.double()[:, None, None]
    var = t**2 * STD**2 + (1 - t) ** 2  # (B, 1, 1)
    diff = x[:, None] - t * MEANS[None]  # (B, K, 2)
    logw = WEIGHTS.log()[None] - diff.square().sum(-1) / (2 * var[..., 0]) - var[..., 0].log()  # 2-D Gaussian
    if component is not None:
        logw = torch.where(torch.arange(len(MEANS))[None] == component[:, None], 0.0, -torch.inf)
    per_component = MEANS[None] + (t * STD**2 - (1 - t)) / var * diff
    return (logw.softmax(-1)[..., None] * per_component).sum(1).float()


def mixture_samples(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = torch.multinomial(WEIGHTS.float(), n, replacement=True, generator=g)
    return MEANS[k].float() + STD * torch.randn(n, 2, generator=g)


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return (2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean()).item()


@pytest.fixture(scope="module")
def distance():
    noise = torch.randn(N, 2, generator=torch.Generator().manual_seed(0))
    target = mixture_samples(N, seed=1)  # fresh samples, independent of the noise
    labels = torch.zeros(N, dtype=torch.long)

    def run(**spec) -> tuple[float, int]:
        latents, nfe = sample(lambda x, t, y: mixture_velocity(x, t), noise, labels, SamplerSpec(**spec), 3)
        return energy_distance(latents, target), nfe

    return run


def test_euler_and_heun_approach_the_target_as_steps_grow(distance):
    euler = [distance(solver="euler", steps=s)[0] for s in (1, 2, 4, 8, 16)]
    heun = [distance(solver="heun", steps=s)[0] for s in (1, 2, 4, 8)]
    assert all(a > b for a, b in pairwise(euler)), euler
    assert all(a > b for a, b in pairwise(heun)), heun
    # second order beats first at equal steps
    assert all(h < e for h, e in zip(heun, euler[:len(heun)], strict=True)), (heun, euler)
    assert euler[-1] < 0.01 * euler[0]


def test_nfe_per_solver_and_dopri5_at_least_as_good_as_heun_64(distance):
    heun64, heun_nfe = distance(solver="heun", steps=64)
    euler_nfe = distance(solver="euler", steps=16)[1]
    best, nfe = distance(solver="dopri5", atol=1e-6, rtol=1e-3)
    assert (euler_nfe, heun_nfe) == (16, 128)
    assert 0 < nfe < heun_nfe
    assert best <= heun64 * 1.02 + 1e-5, (best, heun64)
    assert best < 2e-3  # the noise floor of two independent 4000-sample sets is ~5e-4


@pytest.mark.parametrize("shift", [0.075, 0.3, 1.0, 3.0])
def test_timestep_shift_is_monotone_with_fixed_endpoints(shift):
    grid = timestep_grid(50, shift)
    assert grid[0].item() == 0.0 and grid[-1].item() == 1.0 and len(grid) == 51
    assert (grid[1:] > grid[:-1]).all()
    uniform = torch.linspace(0, 1, 51, dtype=torch.float64)
    if shift == 1.0:
        assert torch.allclose(grid, uniform)
    else:  # s < 1 crowds the steps toward the noise end (t = 0), s > 1 toward the data end
        inner = grid[1:-1] < uniform[1:-1] if shift < 1 else grid[1:-1] > uniform[1:-1]
        assert inner.all()


def spy_model(calls: list):
    """A conditional model (each label a mixture component, the null label the full mixture) on 2 channels,
    recording every call's labels."""

    def model_fn(x, t, y):
        calls.append(y.clone())
        full = mixture_velocity(x, t)
        return torch.where((y == 3)[:, None], full, mixture_velocity(x, t, y.clamp(max=2)))

    return model_fn


def test_cfg_at_scale_one_is_the_conditional_model_alone():
    noise = torch.randn(64, 2, generator=torch.Generator().manual_seed(2))
    labels = torch.arange(64) % 3
    calls: list = []
    guided = sample(spy_model(calls), noise, labels, SamplerSpec(steps=8, cfg_scale=1.0), null_label=3)
    plain = sample(lambda x, t, y: mixture_velocity(x, t, y), noise, labels, SamplerSpec(steps=8), null_label=3)
    assert torch.equal(guided.latents, plain.latents) and guided.nfe == 8
    assert all(len(y) == 64 and not (y == 3).any() for y in calls)  # no unconditional pass


def test_cfg_outside_its_interval_is_conditional_and_inside_guides():
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(3))
    labels = torch.arange(16) % 3
    calls: list = []
    field = GuidedVelocity(spy_model(calls), labels, null_label=3, scale=4.0, interval=(0.5, 1.0))
    t = lambda v: torch.full((16,), v)  # noqa: E731
    assert torch.equal(field(x, 0.25), mixture_velocity(x, t(0.25), labels)) and len(calls[-1]) == 16
    cond, uncond = mixture_velocity(x, t(0.75), labels), mixture_velocity(x, t(0.75))
    assert torch.allclose(field(x, 0.75), uncond + 4.0 * (cond - uncond), atol=1e-6)
    assert len(calls[-1]) == 32 and (calls[-1][16:] == 3).all() and field.nfe == 2


def test_cfg_guides_every_latent_channel():
    c = 8
    x = torch.zeros(4, c, 2, 2)
    labels = torch.tensor([0, 1, 2, 3])
    null = 10

    def model_fn(x, t, y):  # conditional: +label on every channel; unconditional (null): -1
        value = torch.where(y == null, -1.0, y.float())
        return value[:, None, None, None].expand(-1, c, 2, 2).clone()

    out = GuidedVelocity(model_fn, labels, null, scale=3.0, interval=None)(x, 0.5)
    expected = -1.0 + 3.0 * (labels.float() + 1.0)  # uncond + w (cond - uncond)
    assert torch.equal(out, expected[:, None, None, None].expand(-1, c, 2, 2))


def test_sampler_spec_validates_and_round_trips():
    spec = SamplerSpec(solver="heun", steps=32, shift=0.3, cfg_scale=6.7, cfg_interval=[0.125, 1.0], ema=False)
    assert spec.cfg_interval == (0.125, 1.0)
    assert SamplerSpec(**spec.to_dict()) == spec and spec.to_dict()["cfg_interval"] == [0.125, 1.0]
    for bad, match in [({"solver": "ddim"}, "solver"), ({"steps": 0}, "steps"), ({"shift": 0.0}, "shift"),
                       ({"cfg_interval": (0.8, 0.2)}, "cfg_interval")]:
        with pytest.raises(ValueError, match=match):
            SamplerSpec(**bad)
