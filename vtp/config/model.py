"""`model:` the tokenizer: a registered size plus field overrides, resolved to a `TokenizerSpec`."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from vtp.config.base import Section
from vtp.models.registry import TokenizerSpec, get_spec, with_overrides


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

    def spec(self) -> TokenizerSpec:
        return resolve_spec(self)


def resolve_spec(model: ModelConfig) -> TokenizerSpec:
    spec = get_spec(model.size)
    return with_overrides(spec, encoder=model.encoder, decoder=model.decoder, patch=model.patch,
                          bottleneck_dim=model.bottleneck_dim, variational=model.variational)
