"""`train:` the optimiser, schedule, precision and the run's operational settings (shared by every training
stage; a stage's own section may override its learning rate and length)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, model_validator

from vtp.config.base import Section, fail


class TrainConfig(Section):
    steps: int = Field(300, ge=1)
    # NAME: steps derived so this configuration's model FLOPs equal configuration NAME's (vtp.train.compute)
    equal_compute_with: str | None = None
    batch_size: int = Field(64, ge=1)  # global images per optimizer step, all ranks and accumulation included
    grad_accum: int = Field(1, ge=1)  # micro-batches per step; the objective stays the whole batch's
    lr: float = Field(1e-3, gt=0)
    min_lr: float = Field(1e-5, ge=0)
    warmup_steps: int = Field(30, ge=0)
    weight_decay: float = Field(0.05, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = Field(1.0, ge=0)  # 0 disables
    ema_momentum: tuple[float, float] = (0.992, 1.0)  # cosine ramp of the EMA teacher's momentum
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    compile: bool = False  # torch.compile each transformer block in place (student and EMA teacher)
    fsdp: bool = False
    checkpoint_every: int = Field(100, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(10, ge=1)
    image_every: int = Field(100, ge=1)
    nan_policy: Literal["stop", "skip"] = "stop"
    peak_tflops: float | None = Field(None, gt=0)  # declared per-device peak for MFU; None = known GPU or measured
    deterministic: bool = True

    @model_validator(mode="after")
    def _schedule(self, info: ValidationInfo):
        if self.min_lr > self.lr:
            fail("min_lr", self.min_lr, f"must not exceed lr = {self.lr}")
        # Steps still to be derived from `equal_compute_with` are checked once derived (vtp.config.load).
        steps_final = not (info.context or {}).get("steps_pending")
        if steps_final and self.warmup_steps >= self.steps:
            fail("warmup_steps", self.warmup_steps, f"must be smaller than steps = {self.steps}")
        if self.batch_size % self.grad_accum:
            fail("batch_size", self.batch_size, f"must be a multiple of grad_accum = {self.grad_accum}")
        return self
