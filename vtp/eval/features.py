"""What the evaluation reads from a tokenizer: capability checks and pooled linear-probe features.

Any object with the public tokenizer API can be evaluated (`encode`, `decode`; optionally `features`,
`intermediate_layers`, `image_features`, `encode_text`); a `spec` with `text is None` marks a tokenizer without a
text tower.
"""
from __future__ import annotations

from typing import Any

import torch

HEADLINE_BLOCKS = 4  # VTP's headline linear probe: CLS of the last 4 blocks + avgpool (METHOD.md 2.3)
# Probe feature kinds: name -> the protocol recorded with the metric (what each tokenizer gave: probe_features).
PROBE_KINDS = {
    "bottleneck": "mean over tokens of the bottleneck latents (VTP scaling-study protocol, METHOD.md 2.3)",
    "full_last4": f"concat(final-norm CLS token of each of the last {HEADLINE_BLOCKS} encoder blocks) + mean of "
                  "the last block's final-norm patch tokens, full encoder width (VTP's headline linear probe, "
                  "DINOv2 get_intermediate_layers with avgpool, METHOD.md 2.3)",
}


def has_text_tower(tok: Any) -> bool:
    spec = getattr(tok, "spec", None)
    if spec is not None and hasattr(spec, "text"):
        return spec.text is not None
    return callable(getattr(tok, "encode_text", None)) and callable(getattr(tok, "image_features", None))


def has_probe_features(tok: Any) -> bool:
    return callable(getattr(tok, "features", None))


def _depth(tok: Any) -> int | None:
    encoder = getattr(getattr(tok, "spec", None), "encoder", None)
    return getattr(encoder, "depth", None)


def probe_features(tok: Any, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Pooled linear-probe features, float32 on CPU: {"bottleneck": (B, d), "full_last4": (B, 5D) with a CLS
    token, (B, D) without}; and, per kind, what the features are for this tokenizer (recorded with the metric).

    `full_last4` uses `tok.intermediate_layers` (last min(4, depth) blocks). A tokenizer without a CLS token
    (ViTok sizes) gets the mean of the last block's patch tokens only; one without `intermediate_layers` gets
    its `features()` CLS (if any) + mean of patch tokens, last block only."""
    out = tok.features(images)
    for key in ("patches", "bottleneck"):
        if key not in out or out[key] is None or out[key].dim() != 3:
            raise ValueError(f"tokenizer.features: expected {key!r} of shape (B, N, C), got "
                             f"{None if out.get(key) is None else tuple(out[key].shape)}")
    layout = {"bottleneck": "mean over tokens of the bottleneck latents"}
    if callable(getattr(tok, "intermediate_layers", None)):
        k = min(HEADLINE_BLOCKS, _depth(tok) or HEADLINE_BLOCKS)
        layers = tok.intermediate_layers(images, n=k)
        cls, pooled = [lay["cls"] for lay in layers], layers[-1]["patches"].mean(1)
        fewer = f" (the encoder has only {k} blocks)" if k < HEADLINE_BLOCKS else ""
        what = f"concat(CLS of the last {k} blocks) + mean of the last block's patch tokens{fewer}"
    else:
        cls, pooled = [out.get("cls")], out["patches"].mean(1)
        what = "concat(CLS, mean of patch tokens) of the last block only (no intermediate_layers())"
    if cls[0] is None:
        cls, what = [], "mean of the last block's patch tokens only (the encoder has no CLS token)"
    full = torch.cat([*cls, pooled], dim=1)
    layout["full_last4"] = f"{what}, final norm, full width"
    return {"bottleneck": out["bottleneck"].mean(1).float().cpu(), "full_last4": full.float().cpu()}, layout
