"""The linear flow-matching path, its velocity target, timestep sampling and the training loss.

Convention (SiT / LightningDiT, kept so their published settings carry over verbatim):

    x_t = t * x1 + (1 - t) * x0,    x1 data, x0 ~ N(0, I) noise, t in [0, 1]
    t = 0 is pure noise, t = 1 is data, and the target velocity is dx_t/dt = x1 - x0.

The log-normal schedule t = sigmoid(mu + sigma * n) (SD3's logit-normal) with VTP's mu < 0 (-0.75, -0.5)
therefore spends more of training near the noise end. SD3 runs t the other way: there the same schedule has +mu.

Every random draw takes an explicit `torch.Generator` and happens on the generator's device before moving to
the data's, so a CPU generator gives the same numbers whatever the accelerator.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

TIME_SCHEDULES = ("lognormal", "uniform")


def _per_sample(t: Tensor, like: Tensor) -> Tensor:
    """t (B,) -> (B, 1, ..., 1), broadcastable against `like` (B, ...)."""
    return t.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def interpolate(data: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    t = _per_sample(t, data)
    return t * data + (1 - t) * noise


def velocity_target(data: Tensor, noise: Tensor) -> Tensor:
    return data - noise


def sample_noise(like: Tensor, generator: torch.Generator) -> Tensor:
    noise = torch.randn(like.shape, generator=generator, device=generator.device)
    return noise.to(device=like.device, dtype=like.dtype)


def sample_timesteps(n: int, generator: torch.Generator, schedule: str = "lognormal", mu: float = 0.0,
                     sigma: float = 1.0, device: torch.device | str | None = None) -> Tensor:
    """(n,) float32 times in (0, 1): logit-normal sigmoid(mu + sigma * N(0, 1)) or uniform U(0, 1)."""
    if schedule == "lognormal":
        t = torch.sigmoid(mu + sigma * torch.randn(n, generator=generator, device=generator.device))
    elif schedule == "uniform":
        t = torch.rand(n, generator=generator, device=generator.device)
    else:
        raise ValueError(f"timestep schedule: expected one of {TIME_SCHEDULES}, got {schedule!r}")
    return t.to(device if device is not None else generator.device)


def flow_matching_loss(v_pred: Tensor, v_target: Tensor, cosine: bool = False) -> dict[str, Tensor]:
    """{"loss", "mse", "cos"}, all scalars, computed in fp32.

    mse: mean squared error over every element. cos: LightningDiT's `use_cosine_loss` term, the mean over
    samples and positions of 1 - cos(v_pred, v_target) taken across channels (dim 1), so it rewards the right
    direction at each position whatever the magnitude. `loss` = mse (+ cos when `cosine`); `cos` is always
    returned for logging.
    """
    if v_pred.shape != v_target.shape:
        raise ValueError(f"flow loss: prediction {tuple(v_pred.shape)} and target {tuple(v_target.shape)} differ")
    v_pred, v_target = v_pred.float(), v_target.float()
    mse = (v_pred - v_target).square().mean()
    cos = (1 - F.cosine_similarity(v_pred, v_target, dim=1)).mean()
    return {"loss": mse + cos if cosine else mse, "mse": mse, "cos": cos}


def flow_matching_terms(model_fn: Callable[[Tensor, Tensor], Tensor], data: Tensor, generator: torch.Generator,
                        schedule: str = "lognormal", mu: float = 0.0, sigma: float = 1.0,
                        cosine: bool = False) -> dict[str, Tensor]:
    """One training objective on a batch: draw noise then t (in that order, from `generator`), evaluate
    `model_fn(x_t, t)` (the caller binds labels) and score it against the velocity target."""
    noise = sample_noise(data, generator)
    t = sample_timesteps(data.shape[0], generator, schedule, mu, sigma, device=data.device)
    v_pred = model_fn(interpolate(data, noise, t), t)
    return flow_matching_loss(v_pred, velocity_target(data, noise), cosine)
