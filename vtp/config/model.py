"""`model:` the tokenizer: a registered size plus field overrides, resolved to a `TokenizerSpec`."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from vtp.config.base import Section, fail
from vtp.models.registry import ROPE_STYLES, TokenizerSpec, get_spec, with_overrides


class DropPath(Section):
    clip: float = Field(0.1, ge=0.0, lt=1.0)
    ssl: float = Field(0.1, ge=0.0, lt=1.0)
    rec: float = Field(0.0, ge=0.0, lt=1.0)


class ModelConfig(Section):
    size: str = "vtp-cpu-s"
    patch: int | None = Field(None, ge=1)
    bottleneck_dim: int | None = Field(None, ge=1)
    variational: bool | None = None
    encoder: dict[str, Any] = {}  # ViTSpec field overrides, e.g. {depth: 6, width: 256}
    decoder: dict[str, Any] = {}
    bottleneck_ae_only: bool = True  # semantic heads read full-width features (released VTP) or the latent
    clip_feature: Literal["cls", "pooled"] = "cls"
    drop_path: DropPath = DropPath()
    grad_checkpointing: bool = False

    @field_validator("encoder", "decoder")
    @classmethod
    def _rope_fields(cls, tower: dict[str, Any]) -> dict[str, Any]:
        """`rope` must name a style of ROPE_STYLES; `rope_base` is a positive number (YAML reads `1e4` as a
        string, so numeric strings are accepted)."""
        if "rope" in tower and tower["rope"] not in ROPE_STYLES:
            fail("rope", tower["rope"], f"unknown RoPE style; allowed: {', '.join(ROPE_STYLES)}")
        if "rope_base" in tower:
            base = tower["rope_base"]
            try:
                value = float(base) if isinstance(base, (int, float, str)) and not isinstance(base, bool) else 0.0
            except ValueError:
                value = 0.0
            if not value > 0:  # also rejects nan
                fail("rope_base", base, "must be a positive number (DINOv3 period base or ViTok theta, e.g. 1e4)")
            tower = {**tower, "rope_base": value}
        return tower

    def spec(self) -> TokenizerSpec:
        return resolve_spec(self)


def resolve_spec(model: ModelConfig) -> TokenizerSpec:
    spec = get_spec(model.size)
    return with_overrides(spec, encoder=model.encoder, decoder=model.decoder, patch=model.patch,
                          bottleneck_dim=model.bottleneck_dim, variational=model.variational)
