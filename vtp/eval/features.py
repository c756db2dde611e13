"""What the evaluation reads from a tokenizer: capability checks and pooled linear-probe features.

Any object with the public tokenizer API can be evaluated (`encode`, `decode`; optionally `features`,
`image_features`, `encode_text`); a `spec` with `text is None` marks a tokenizer without a text tower.
"""
from __future__ import annotations

from typing import Any

import torch

# Probe feature kinds: name -> protocol text recorded with the metric.
PROBE_KINDS = {
    "bottleneck": "mean over tokens of the bottleneck latents (VTP scaling-study protocol, METHOD.md 2.3)",
    "full": "concat(final-norm CLS token, mean of final-norm patch tokens) at full encoder width (CLS "
            "omitted when the tokenizer has none); last block only (VTP's headline probe also concatenates the CLS "
            "of the last 4 blocks)",
}


def has_text_tower(tok: Any) -> bool:
    spec = getattr(tok, "spec", None)
    if spec is not None and hasattr(spec, "text"):
        return spec.text is not None
    return callable(getattr(tok, "encode_text", None)) and callable(getattr(tok, "image_features", None))


def has_probe_features(tok: Any) -> bool:
    return callable(getattr(tok, "features", None))


def probe_features(tok: Any, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """{"bottleneck": (B, d), "full": (B, D or 2D)} pooled features for linear probes, float32 on CPU."""
    out = tok.features(images)
    for key in ("patches", "bottleneck"):
        if key not in out or out[key] is None or out[key].dim() != 3:
            raise ValueError(f"tokenizer.features: expected {key!r} of shape (B, N, C), got "
                             f"{None if out.get(key) is None else tuple(out[key].shape)}")
    pooled = out["patches"].mean(1)
    full = pooled if out.get("cls") is None else torch.cat([out["cls"], pooled], dim=1)
    return {"bottleneck": out["bottleneck"].mean(1).float().cpu(), "full": full.float().cpu()}
