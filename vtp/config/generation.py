"""Generation on a tokenizer's latents: `latents:` (encoding the training split), `dit:` (the DiT and its
flow-matching objective) and `sample:` (the sampler; every sample batch records it)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vtp.config.base import Section, fail


class LatentsConfig(Section):
    batch_size: int = Field(64, ge=1)  # images encoded per forward, per rank
    flip: bool = True  # also store each image's horizontally flipped latent (LightningDiT's latents_flip)
    shard_size: int = Field(4096, ge=1)  # samples per latent shard


class DiTConfig(Section):
    size: str = "dit-cpu-s"
    label: str = "shape"  # the label set the DiT is conditioned on
    class_dropout: float | None = Field(None, ge=0, lt=1)  # None: the size's (0.1)
    steps: int = Field(2000, ge=1)
    batch_size: int = Field(128, ge=1)  # global latents per optimizer step
    grad_accum: int = Field(1, ge=1)
    lr: float = Field(2e-4, gt=0)  # LightningDiT: constant 2e-4, AdamW beta2 0.95, no weight decay
    min_lr: float | None = Field(None, ge=0)  # None: constant after warm-up
    warmup_steps: int = Field(0, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, ge=0)
    ema: float = Field(0.9999, ge=0, lt=1)
    time_schedule: Literal["lognormal", "uniform"] = "lognormal"
    lognorm_mu: float = -0.75  # VTP's DiT-B protocol (t = 1 is data, so mu < 0 leans toward noise)
    lognorm_sigma: float = Field(1.0, gt=0)
    cosine_loss: bool = True  # LightningDiT's extra 1 - cos(v_pred, v) term
    # Keep the EMA weights every this many steps and at the last (checkpoints/ema/): the generation convergence
    # curve. None: keep none.
    snapshot_every: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _schedule(self):
        if self.warmup_steps >= self.steps:
            fail("warmup_steps", self.warmup_steps, f"must be smaller than steps = {self.steps}")
        if self.min_lr is not None and self.min_lr > self.lr:
            fail("min_lr", self.min_lr, f"must not exceed lr = {self.lr}")
        if self.batch_size % self.grad_accum:
            fail("batch_size", self.batch_size, f"must be a multiple of grad_accum = {self.grad_accum}")
        return self


class SampleConfig(Section):
    num: int = Field(256, ge=1)  # images sampled by `vtp sample`
    batch_size: int = Field(64, ge=1)  # per rank
    solver: Literal["euler", "heun", "dopri5"] = "euler"
    steps: int = Field(50, ge=1)  # fixed-step solvers
    atol: float = Field(1e-6, gt=0)  # dopri5
    rtol: float = Field(1e-3, gt=0)
    shift: float = Field(1.0, gt=0)  # timestep shift; 1 = none
    cfg_scale: float = Field(1.0, ge=0)
    cfg_interval: tuple[float, float] | None = None  # guided only while lo <= t <= hi
    ema: bool = True  # sample from the EMA weights
    seed: int = 0
    checkpoint: int | None = None  # a DiT checkpoint step; None: the final model
    grid_per_class: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _interval(self):
        if self.cfg_interval is not None and not 0 <= self.cfg_interval[0] <= self.cfg_interval[1] <= 1:
            fail("cfg_interval", list(self.cfg_interval), "need 0 <= lo <= hi <= 1")
        return self


class GenEvalConfig(Section):
    """`gen_eval:` generation metrics of the DiT's samples against the validation split (`vtp evaluate-generation`),
    in eval.feature_space; values depend on the sample count and the sampler, both recorded with them."""
    num_reference: int | None = Field(None, ge=2)  # validation images; None: the whole split
    batch_size: int = Field(64, ge=1)  # images per feature-extractor forward, per rank
    kid_subset_size: int = Field(100, ge=2)  # capped at the smaller set's size (recorded)
    prc_neighborhood: int = Field(3, ge=1)  # k of the k-NN manifolds (Kynkaanniemi et al. 2019)
    is_splits: int = Field(10, ge=1)
    convergence_num: int = Field(100, ge=2)  # samples per DiT snapshot on the convergence curve (fixed seed)


class JudgeConfig(Section):
    """`judge:` the independent classifier of samples (`vtp judge`), trained on real images only."""
    label: str = "shape"  # must be the label the DiT is conditioned on (dit.label) for samples to be judged
    epochs: int = Field(8, ge=1)
    lr: float = Field(3e-3, gt=0)  # the one-cycle peak
    batch_size: int = Field(128, ge=1)
    width: int = Field(16, ge=4)
    train_samples: int = Field(8192, ge=10)
    val_samples: int = Field(1024, ge=10)
