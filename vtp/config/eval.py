"""`eval:` the pinned tokenizer-evaluation protocol (sample count, feature space, probes, zero-shot)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vtp.config.base import Section, fail


class EvalConfig(Section):
    num_samples: int = Field(1024, ge=2)
    batch_size: int = Field(64, ge=1)
    feature_space: Literal["effnetlite0", "inception"] = "effnetlite0"
    inception_weights: str | None = None  # file; default: torch-fidelity's file in $TORCH_HOME
    kid_subset_size: int = Field(100, ge=2)
    label: str = "shape"  # which label set classifies (zero-shot, linear probe)
    probe_lrs: tuple[float, ...] = Field((1e-3, 1e-2, 1e-1), min_length=1)  # swept; chosen on the holdout
    probe_epochs: int = Field(30, ge=1)
    grid_images: int = Field(16, ge=1)
    zeroshot_templates: Literal["shapes", "openai_imagenet", "simple_imagenet"] = "shapes"  # vtp.eval.zeroshot
    probe_train_samples: int = Field(4096, ge=10)  # train-split images whose features fit the probes
    probe_holdout: float = Field(0.2, gt=0, lt=1)  # share of those that selects the learning rate
    probe_batch_size: int = Field(256, ge=1)
    probe_weight_decay: float = Field(1e-4, ge=0)

    @model_validator(mode="after")
    def _positive_lrs(self):
        if any(lr <= 0 for lr in self.probe_lrs):
            fail("probe_lrs", list(self.probe_lrs), "every learning rate must be > 0")
        return self
