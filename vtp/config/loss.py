"""`loss:` the stage-1 objectives (CLIP, DINO + iBOT, L1 + LPIPS) and how one batch is shared among them."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from vtp.config.base import Section


class DinoLossConfig(Section):
    student_temp: float = Field(0.1, gt=0)
    teacher_temp: float = Field(0.07, gt=0)
    teacher_temp_warmup: float = Field(0.04, gt=0)  # linear ramp to teacher_temp over warmup_fraction
    warmup_fraction: float = Field(0.3, ge=0, le=1)
    centering: Literal["sinkhorn", "softmax"] = "sinkhorn"
    center_momentum: float = Field(0.9, ge=0, le=1)
    ibot_weight: float = Field(1.0, ge=0)
    koleo_weight: float = Field(0.0, ge=0)  # KoLeo spreads each rank's micro-batch (DINOv2: per-GPU batch)
    # The prototypes (the head's last layer) stay frozen for this fraction of training (DINOv2: the first of 100
    # epochs), which keeps the early, random targets from collapsing them.
    freeze_last_layer_fraction: float = Field(0.01, ge=0, le=1)


class LossConfig(Section):
    clip: bool = True
    ssl: bool = True
    rec: bool = True
    weight_clip: float = Field(1.0, ge=0)
    weight_ssl: float = Field(1.0, ge=0)
    weight_rec: float = Field(0.1, ge=0)
    # L_rec = l1_weight * L1 + mse_weight * MSE + lpips_weight * LPIPS: VTP uses L1 + LPIPS; ViTok's stage 1 is
    # MSE + LPIPS (+ KL), i.e. l1_weight 0, mse_weight 1.
    l1_weight: float = Field(1.0, ge=0)
    mse_weight: float = Field(0.0, ge=0)
    lpips_weight: float = Field(1.0, ge=0)
    lpips_net: Literal["vgg", "alex"] = "vgg"
    lpips_weights: str | None = None  # file (safetensors or torchvision .pth); default: vtp.weights' search order
    kl_weight: float = Field(1e-3, ge=0)  # only for a variational (ViTok) bottleneck
    batch_ratio: tuple[float, float, float] = (8, 2, 1)  # clip : ssl : rec subsets of one batch
    dino: DinoLossConfig = DinoLossConfig()

    @property
    def enabled(self) -> tuple[str, ...]:
        return tuple(o for o in ("clip", "ssl", "rec") if getattr(self, o))
