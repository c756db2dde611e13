"""Named model sizes: pure data, no torch, so configs validate before anything heavy is imported.

A size is a `TokenizerSpec` (encoder, decoder, bottleneck, text tower, DINO head). Modules are built from
specs in `vtp.models.tokenizer`; nothing here is a class per size.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any


def swiglu_hidden(width: int, mlp_ratio: float = 4.0, multiple: int = 8) -> int:
    """DINOv3/VTP rule: a SwiGLU with 2/3 of the MLP's hidden width, rounded up to `multiple`."""
    hidden = int(width * mlp_ratio * 2 / 3)
    return multiple * math.ceil(hidden / multiple)


ROPE_STYLES = ("dinov3-2d", "vitok-1d", "vitok-2d")
"""RoPE styles of a `ViTSpec` (implemented by `vtp.models.layers.Rope`):

- "dinov3-2d": DINOv3/VTP (METHOD.md 1.1). 2D axial over the patch grid, coordinates normalised to [-1, 1]
  per axis, periods base^(2i/(head_dim/2)), rotate-half channel pairs; prefix tokens are not rotated.
- "vitok-1d": ViTok's default `rope_style='1d_axial'` (METHOD.md 4.1; code `vitok/models/ae.py` `AE.encode` /
  `AE.decode` with `pos_embed.compute_freqs_cis`). Integer positions 0..N-1 over the whole flattened sequence
  (row-major patches), frequencies theta^(-2i/head_dim), adjacent channel pairs (2i, 2i+1) as in ViTok's
  `apply_rotary_emb`. Every token gets a position: ViTok prepends its latent code tokens and numbers the
  concatenation, so prefix tokens take positions 0..P-1 and patches P..P+h*w-1.
- "vitok-2d": ViTok's `'2d_axial'` (`pos_embed.compute_axial_cis` with `init_t_xy`): integer column x and
  row y, head_dim/4 frequencies theta^(-4j/head_dim) per axis, x angles then y angles, adjacent pairs.
  ViTok builds this table for the patch grid only (it has no prefix tokens then), so prefix tokens here are
  not rotated, as in "dinov3-2d".
"""


@dataclass(frozen=True)
class ViTSpec:
    width: int
    depth: int
    heads: int
    mlp_ratio: float = 4.0
    # DINOv3/VTP shrink a gated MLP to 2/3 of mlp_ratio*width (rounded up to 8); ViTok uses int(width*ratio).
    glu_two_thirds: bool = True
    ffn: str = "swiglu"  # swiglu | geglu | mlp
    norm: str = "rmsnorm"  # rmsnorm | layernorm
    qkv_bias: bool = True
    qk_norm: bool = False
    layerscale: float | None = None  # LayerScale init value; None = off
    rope: str = "dinov3-2d"  # RoPE style, one of ROPE_STYLES (see `vtp.models.layers.Rope`)
    rope_base: float = 100.0  # DINOv3's period base for "dinov3-2d"; ViTok's theta for "vitok-*"
    registers: int = 0  # extra prefix tokens (encoder only)

    def __post_init__(self):
        if self.rope not in ROPE_STYLES:
            raise ValueError(f"rope: expected one of {', '.join(ROPE_STYLES)}, got {self.rope!r}")
        if not self.rope_base > 0:
            raise ValueError(f"rope_base: expected a positive number, got {self.rope_base!r}")

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def mlp_hidden(self) -> int:
        if self.ffn != "mlp" and self.glu_two_thirds:
            return swiglu_hidden(self.width, self.mlp_ratio)
        return int(self.width * self.mlp_ratio)


@dataclass(frozen=True)
class TextSpec:
    width: int = 768
    depth: int = 12
    heads: int = 12
    context_length: int = 77
    vocab_size: int = 49408  # OpenAI CLIP BPE, shipped inside open_clip


@dataclass(frozen=True)
class DinoHeadSpec:
    hidden: int = 2048
    bottleneck: int = 256
    prototypes: int = 65536
    layers: int = 3


class LatentGrid:
    """Latents of shape (bottleneck_dim, H / patch, W / patch): any tokenizer spec with those two fields."""
    bottleneck_dim: int
    patch: int

    def latent_shape(self, resolution: int) -> tuple[int, int, int]:
        side = resolution // self.patch
        return (self.bottleneck_dim, side, side)

    def bottleneck_size(self, resolution: int) -> int:
        """ViTok's E = tokens x channels."""
        c, h, w = self.latent_shape(resolution)
        return c * h * w


@dataclass(frozen=True)
class TokenizerSpec(LatentGrid):
    name: str
    encoder: ViTSpec
    decoder: ViTSpec
    patch: int = 16
    bottleneck_dim: int = 64
    variational: bool = False  # ViTok's diagonal-Gaussian bottleneck (KL); VTP's is deterministic
    cls_token: bool = True
    text: TextSpec | None = field(default_factory=TextSpec)
    clip_dim: int = 768
    dino: DinoHeadSpec | None = field(default_factory=DinoHeadSpec)



def vtp_vit(width: int, depth: int, heads: int, norm: str = "rmsnorm") -> ViTSpec:
    return ViTSpec(width, depth, heads, norm=norm)


def vitok_vit(width: int, depth: int, heads: int) -> ViTSpec:
    # ViTok Table 1 / released code: LayerNorm, 3-matrix gated MLP with hidden int(2.67*width), no qkv bias,
    # no CLS token. We follow the paper's SwiGLU; the released code gates with GELU (ffn="geglu", same
    # parameter and MAC counts). The paper's 3D RoPE is a TODO in the released code, whose default is 1D RoPE
    # over the flattened tokens with integer positions and theta 1e4 (METHOD.md 4.1; ROPE_STYLES).
    return ViTSpec(width, depth, heads, mlp_ratio=2.67, glu_two_thirds=False, norm="layernorm", qkv_bias=False,
                   rope="vitok-1d", rope_base=10000.0)


VTP_TOWERS = {"s": (384, 12, 6), "b": (768, 12, 12), "l": (1024, 24, 16)}
VITOK_TOWERS = {"s": vitok_vit(768, 6, 12), "b": vitok_vit(768, 12, 12), "l": vitok_vit(1152, 24, 16)}

SIZES: dict[str, TokenizerSpec] = {}


def _add(table: dict, spec, what: str):
    if spec.name in table:
        raise ValueError(f"{what} {spec.name!r} is registered twice")
    table[spec.name] = spec
    return spec


def register(spec: TokenizerSpec) -> TokenizerSpec:
    return _add(SIZES, spec, "model size")


# VTP (METHOD.md 1.1): symmetric encoder/decoder, RMSNorm encoder, LayerNorm decoder, d=64, p=16.
for _key, (_w, _d, _h) in VTP_TOWERS.items():
    register(TokenizerSpec(f"vtp-{_key}-d64", vtp_vit(_w, _d, _h), vtp_vit(_w, _d, _h, norm="layernorm")))
    # Scaling-study protocol: the same encoder with a 4-block ViT-L pixel decoder (METHOD.md 1.2).
    register(TokenizerSpec(f"vtp-{_key}-d64-dec4l", vtp_vit(_w, _d, _h), vtp_vit(1024, 4, 16, norm="layernorm")))

# ViTok single towers (encoder = decoder size) and the asymmetric enc-dec/p pairings, c=16 (their best E).
for _e, _enc in VITOK_TOWERS.items():
    register(TokenizerSpec(f"vitok-{_e}", _enc, _enc, bottleneck_dim=16, variational=True, cls_token=False,
                           text=None, dino=None))
    for _d, _dec in VITOK_TOWERS.items():
        for _p in (8, 16, 32):
            register(TokenizerSpec(f"vitok-{_e}-{_d}/{_p}", _enc, _dec, patch=_p, bottleneck_dim=16,
                                   variational=True, cls_token=False, text=None, dino=None))

# CPU sizes: tests and the demo (32-64 px, patch 4-8, minutes on two cores).
_CPU_TEXT = TextSpec(width=128, depth=2, heads=4, context_length=32)
_CPU_DINO = DinoHeadSpec(hidden=256, bottleneck=64, prototypes=1024, layers=3)
register(TokenizerSpec("tiny", vtp_vit(64, 2, 2), vtp_vit(64, 2, 2, norm="layernorm"), patch=8, bottleneck_dim=8,
                       text=TextSpec(width=64, depth=1, heads=2, context_length=32), clip_dim=64,
                       dino=DinoHeadSpec(hidden=64, bottleneck=32, prototypes=128, layers=2)))
register(TokenizerSpec("vtp-cpu-s", vtp_vit(192, 4, 3), vtp_vit(192, 4, 3, norm="layernorm"), patch=8,
                       bottleneck_dim=16, text=_CPU_TEXT, clip_dim=128, dino=_CPU_DINO))


def get_spec(name: str) -> TokenizerSpec:
    try:
        return SIZES[name]
    except KeyError:
        raise KeyError(f"unknown model size {name!r}; registered sizes: {', '.join(sorted(SIZES))}") from None


def with_overrides(spec: TokenizerSpec, encoder: dict | None = None, decoder: dict | None = None,
                   **changes) -> TokenizerSpec:
    """Replace fields of a registered size: `encoder`/`decoder` take ViTSpec fields, the rest TokenizerSpec's."""
    towers = {k: replace(getattr(spec, k), **v) for k, v in (("encoder", encoder), ("decoder", decoder)) if v}
    return replace(spec, **towers, **{k: v for k, v in changes.items() if v is not None})


def spec_to_dict(spec: TokenizerSpec) -> dict[str, Any]:
    """A JSON-ready dict (`config.json` of a saved tokenizer); `spec_from_dict` inverts it."""
    return asdict(spec)


def _build(cls: type, data: dict[str, Any], where: str):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; allowed: {sorted(known)}")
    return cls(**data)


def spec_from_dict(data: dict[str, Any]) -> TokenizerSpec:
    nested = {"encoder": ViTSpec, "decoder": ViTSpec, "text": TextSpec, "dino": DinoHeadSpec}
    parts = {k: None if data.get(k) is None else _build(cls, data[k], f"spec.{k}")
             for k, cls in nested.items() if k in data}
    return _build(TokenizerSpec, {**data, **parts}, "spec")


# ---- DiT generators on tokenizer latents -------------------------------------------------------------------------
@dataclass(frozen=True)
class DiTSpec:
    """A LightningDiT size. Latent channels, grid and class count come from the data at build time
    (`vtp.models.dit.DiT(spec, in_channels, grid, num_classes)`), so one size serves every tokenizer."""

    name: str
    width: int
    depth: int
    heads: int
    patch: int
    mlp_ratio: float = 4.0
    qk_norm: bool = False
    rope: bool = True
    rope_base: float = 100.0  # AxialRope (DINOv3 coordinates in [-1, 1]), as the tokenizer's ViTs
    sincos_pos: bool = True  # LightningDiT adds the fixed 2D sincos embedding even with RoPE
    class_dropout: float = 0.1  # label dropout: trains the null class used by classifier-free guidance

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def mlp_hidden(self) -> int:
        """LightningDiT's SwiGLU: 2/3 of int(width * mlp_ratio), not rounded, so 3 matrices cost what DiT's
        2-matrix GELU MLP does (8 width^2 parameters at ratio 4)."""
        return int(2 / 3 * int(self.width * self.mlp_ratio))


DIT_SIZES: dict[str, DiTSpec] = {}


def register_dit(spec: DiTSpec) -> DiTSpec:
    return _add(DIT_SIZES, spec, "DiT size")


# LightningDiT's sizes (METHOD.md 2.4): (width, depth, heads); VTP trains the /1 ones on 16x16x64 latents.
DIT_TOWERS = {"b": (768, 12, 12), "l": (1024, 24, 16), "xl": (1152, 28, 16)}
for _key, (_w, _d, _h) in DIT_TOWERS.items():
    for _p in (1, 2):
        register_dit(DiTSpec(f"dit-{_key}/{_p}", _w, _d, _h, patch=_p))
register_dit(DiTSpec("dit-1p0b/1", 1536, 24, 24, patch=1))  # Table 2's 1.0B generator [inferred]
# CPU sizes: 4x4 / 8x8 latent grids with 8-32 channels, seconds to minutes on two cores.
register_dit(DiTSpec("dit-tiny", 64, 2, 2, patch=1))
register_dit(DiTSpec("dit-cpu-s", 192, 6, 3, patch=1))


def get_dit_spec(name: str) -> DiTSpec:
    try:
        return DIT_SIZES[name]
    except KeyError:
        raise KeyError(f"unknown DiT size {name!r}; registered DiT sizes: {', '.join(sorted(DIT_SIZES))}") from None
