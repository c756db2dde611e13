"""ODE samplers for the flow-matching DiT: Euler, Heun and adaptive dopri5 (torchdiffeq), with classifier-free
guidance and a timestep shift. Time runs from noise (t = 0) to data (t = 1), as in `vtp.diffusion.flow`.

Timestep shift (LightningDiT's `timestep_shift`; the SD3 / FLUX shift written for this time direction):

    t' = s * t / (s * t + 1 - t)        (= s t / (1 + (s - 1) t))

maps [0, 1] onto itself, monotone, endpoints fixed. s < 1 packs the steps toward the noise end (VTP samples
with s = 0.075, LightningDiT with 0.3); s = 1 is the uniform grid, which LightningDiT's configs write as 0.
With SD3's noise level sigma = 1 - t it is SD3's shift with factor 1/s.

Guidance: v = v_uncond + w * (v_cond - v_uncond) on every latent channel (the DiT release guided only the
first three, DiT #41), applied only while t lies in `cfg_interval` (lo, hi) (guidance interval, Kynkaanniemi
et al. 2024; LightningDiT's `cfg_interval_start` 0.125 is (0.125, 1.0)). Outside it, or at w = 1, the model runs
on the conditional batch alone, so w = 1 is exactly the conditional model.

NFE counts evaluations of the (guided) velocity field; while guidance is on, each is one call on a doubled batch.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from itertools import pairwise
from typing import NamedTuple

import torch
from torch import Tensor

SOLVERS = ("euler", "heun", "dopri5")
ModelFn = Callable[[Tensor, Tensor, Tensor], Tensor]  # (x_t, t (B,), labels (B,)) -> velocity


@dataclass(frozen=True)
class SamplerSpec:
    """Everything that decides a sample; log `to_dict()` with every generation metric (LightningDiT #42)."""

    solver: str = "euler"
    steps: int = 250  # fixed-step solvers: integration steps (LightningDiT's num_steps counts grid points, +1)
    atol: float = 1e-6  # dopri5 only (as `steps` and `shift` apply only to the fixed-step solvers)
    rtol: float = 1e-3
    shift: float = 1.0
    cfg_scale: float = 1.0
    cfg_interval: tuple[float, float] | None = None  # guided while lo <= t <= hi; None: everywhere
    ema: bool = True  # sample with the EMA weights (recorded here; the caller picks the model)
    seed: int = 0  # seeds the initial noise (drawn by the caller)

    def __post_init__(self):
        if self.solver not in SOLVERS:
            raise ValueError(f"sampler.solver: expected one of {SOLVERS}, got {self.solver!r}")
        if self.steps < 1:
            raise ValueError(f"sampler.steps: expected >= 1, got {self.steps}")
        if not self.shift > 0:
            raise ValueError(f"sampler.shift: expected > 0 (1 = no shift), got {self.shift}")
        if self.atol <= 0 or self.rtol <= 0:
            raise ValueError(f"sampler.atol / rtol: expected > 0, got {self.atol} / {self.rtol}")
        if self.cfg_interval is not None:
            lo, hi = map(float, self.cfg_interval)
            if not 0 <= lo <= hi <= 1:
                raise ValueError(f"sampler.cfg_interval: expected 0 <= lo <= hi <= 1, got {self.cfg_interval}")
            object.__setattr__(self, "cfg_interval", (lo, hi))  # a list from a config file becomes a tuple

    def to_dict(self) -> dict:
        out = asdict(self)
        out["cfg_interval"] = list(self.cfg_interval) if self.cfg_interval is not None else None
        return out


class Samples(NamedTuple):
    latents: Tensor
    nfe: int


def timestep_grid(steps: int, shift: float = 1.0) -> Tensor:
    """(steps + 1,) float64 times from 0 (noise) to 1 (data), shifted as in the module docstring."""
    t = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    return shift * t / (shift * t + (1 - t))  # (1 - t) first: exactly 1 at t = 1


class GuidedVelocity:
    """The field the ODE integrates: `model_fn` with classifier-free guidance, counting its evaluations."""

    def __init__(self, model_fn: ModelFn, labels: Tensor, null_label: int, scale: float,
                 interval: tuple[float, float] | None):
        self.model_fn, self.labels, self.scale, self.interval = model_fn, labels, scale, interval
        self.null = torch.full_like(labels, null_label)
        self.nfe = 0

    def guided(self, t: float) -> bool:
        return self.scale != 1.0 and (self.interval is None or self.interval[0] <= t <= self.interval[1])

    def __call__(self, x: Tensor, t: float) -> Tensor:
        self.nfe += 1
        tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.float32)
        if not self.guided(t):
            return self.model_fn(x, tt, self.labels).to(x.dtype)
        both = self.model_fn(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([self.labels, self.null]))
        cond, uncond = both.to(x.dtype).chunk(2)
        return uncond + self.scale * (cond - uncond)


def euler(field: GuidedVelocity, x: Tensor, grid: list[float]) -> Tensor:
    for t0, t1 in pairwise(grid):
        x = x + (t1 - t0) * field(x, t0)
    return x


def heun(field: GuidedVelocity, x: Tensor, grid: list[float]) -> Tensor:
    """Heun's second-order method (explicit trapezoid): two NFE per step."""
    for t0, t1 in pairwise(grid):
        h = t1 - t0
        d0 = field(x, t0)
        d1 = field(x + h * d0, t1)
        x = x + 0.5 * h * (d0 + d1)
    return x


def dopri5(field: GuidedVelocity, x: Tensor, atol: float, rtol: float) -> Tensor:
    """Adaptive Dormand-Prince 5(4) through torchdiffeq. The error norm spans the whole batch, so samples of one
    batch share step sizes (as in LightningDiT / SiT)."""
    from torchdiffeq import odeint

    times = torch.tensor([0.0, 1.0], device=x.device, dtype=torch.float32)
    return odeint(lambda t, y: field(y, float(t)), x, times, method="dopri5", atol=atol, rtol=rtol)[-1]


@torch.no_grad()
def sample(model_fn: ModelFn, noise: Tensor, labels: Tensor, spec: SamplerSpec, null_label: int) -> Samples:
    """Integrate from `noise` (t = 0) to latents (t = 1) for `labels`; returns (latents, nfe)."""
    field = GuidedVelocity(model_fn, labels, null_label, spec.cfg_scale, spec.cfg_interval)
    if spec.solver == "dopri5":
        latents = dopri5(field, noise, spec.atol, spec.rtol)
    else:
        grid = timestep_grid(spec.steps, spec.shift).tolist()
        latents = (euler if spec.solver == "euler" else heun)(field, noise, grid)
    return Samples(latents, field.nfe)
