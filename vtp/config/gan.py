"""`gan:` stage 2 (`vtp decoder-gan`): frozen encoder, decoder fine-tuned with L1 + LPIPS + a hinge GAN."""
from __future__ import annotations

from pydantic import Field, model_validator

from vtp.config.base import Section, fail


class GanConfig(Section):
    steps: int = Field(200, ge=1)
    lr: float = Field(5e-5, gt=0)
    warmup_steps: int = Field(20, ge=0)  # the decoder's learning-rate warm-up
    weight: float = Field(0.05, ge=0)  # ViTok App. A.2's best generator GAN weight
    start_step: int = Field(50, ge=0)  # generator adversarial term off before this step
    adv_warmup_steps: int = Field(50, ge=0)  # then ramped linearly to `weight` (independent of the LR warm-up)
    disc_lr: float = Field(2e-5, gt=0)
    disc_betas: tuple[float, float] = (0.5, 0.9)  # GAN discriminators train with a low beta1 (taming/ViTok)
    disc_weight_decay: float = Field(0.0, ge=0)
    disc_width: int = Field(64, ge=8)
    disc_blocks: int = Field(3, ge=1)
    ema: float | None = Field(0.999, ge=0, lt=1)  # decoder EMA (ViTok: 0.9999 at scale); null = off

    @model_validator(mode="after")
    def _schedule(self):
        if self.warmup_steps >= self.steps:
            fail("warmup_steps", self.warmup_steps, f"must be smaller than steps = {self.steps}")
        return self
