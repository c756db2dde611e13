"""`Tokenizer`: the VTP visual tokenizer (encoder, bottleneck, pixel decoder, CLIP and DINO heads) built
from a registry spec, with the training-facing pieces and the public inference API.

Convention: images are float tensors (B, 3, H, W) in [-1, 1]; latents are (B, d, H/p, W/p). Inference
methods (`encode`, `decode`, `image_features`, `features`) keep autograd on: wrap them in
`torch.inference_mode()` when you do not need gradients; `intermediate_layers` (probe features) never records
gradients.
"""
from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from torch import nn

from vtp.fileio import write_bytes_atomic
from vtp.models.decoder import PixelDecoder
from vtp.models.encoder import GaussianBottleneck, LinearBottleneck, VisionEncoder, semantic_features
from vtp.models.heads import DinoHead, build_text_tower
from vtp.models.registry import TokenizerSpec, get_spec, spec_from_dict, spec_to_dict

ClipFeature = Literal["cls", "pooled"]
WEIGHTS, CONFIG = "model.safetensors", "config.json"


@functools.lru_cache(maxsize=4)
def _bpe(context_length: int):
    from vtp.data.text import TextTokenizer  # the CLIP BPE vocabulary bundled with open_clip

    return TextTokenizer(context_length)


class Tokenizer(nn.Module):
    def __init__(self, spec: TokenizerSpec, bottleneck_ae_only: bool = True, clip_feature: ClipFeature = "cls"):
        super().__init__()
        if clip_feature not in ("cls", "pooled"):
            raise ValueError(f"clip_feature: expected 'cls' or 'pooled', got {clip_feature!r}")
        if clip_feature == "cls" and not spec.cls_token and spec.text is not None:
            raise ValueError(f"clip_feature='cls' needs a CLS token, but size {spec.name!r} has none; use 'pooled'")
        if spec.dino is not None and not spec.cls_token:
            raise ValueError(f"size {spec.name!r}: a DINO head needs a CLS token (cls_token=False)")
        if spec.bottleneck_dim < 1:
            raise ValueError(f"bottleneck_dim: expected >= 1, got {spec.bottleneck_dim}")
        self.spec, self.bottleneck_ae_only, self.clip_feature = spec, bottleneck_ae_only, clip_feature
        self.encoder = VisionEncoder(spec.encoder, spec.patch, cls_token=spec.cls_token)
        make = GaussianBottleneck if spec.variational else LinearBottleneck
        self.bottleneck = make(spec.encoder.width, spec.bottleneck_dim)
        self.decoder = PixelDecoder(spec.decoder, spec.patch, spec.bottleneck_dim)
        sem_dim = spec.encoder.width if bottleneck_ae_only else spec.bottleneck_dim
        self.text = build_text_tower(spec.text, spec.clip_dim) if spec.text is not None else None
        self.clip_proj = nn.Linear(sem_dim, spec.clip_dim, bias=False) if spec.text is not None else None
        # Shape (1,), not a scalar: FSDP2 cannot shard 0-d parameters.
        self.logit_scale = nn.Parameter(torch.full((1,), math.log(1 / 0.07))) if spec.text is not None else None
        if self.clip_proj is not None:
            nn.init.normal_(self.clip_proj.weight, std=sem_dim ** -0.5)  # OpenCLIP's visual projection init
        self.dino_head = DinoHead(sem_dim, spec.dino) if spec.dino is not None else None

    @classmethod
    def from_spec(cls, spec: TokenizerSpec | str, bottleneck_ae_only: bool = True,
                  clip_feature: ClipFeature = "cls") -> Tokenizer:
        return cls(get_spec(spec) if isinstance(spec, str) else spec, bottleneck_ae_only, clip_feature)

    # ---- training-facing pieces -------------------------------------------------------------------------
    def trunk(self, images: torch.Tensor, masks: torch.Tensor | None = None,
              drop_rate: float = 0.0) -> dict[str, torch.Tensor | None]:
        """Full-width normed tokens: dict(cls=(B, D) or None, patches=(B, N, D))."""
        return self.encoder(images, masks=masks, drop_rate=drop_rate)

    def semantic(self, images: torch.Tensor, masks: torch.Tensor | None = None,
                 drop_rate: float = 0.0) -> dict[str, torch.Tensor | None]:
        """What the CLIP/DINO heads read: the trunk (bottleneck_ae_only) or the bottlenecked tokens."""
        return semantic_features(self.encoder, None if self.bottleneck_ae_only else self.bottleneck, images,
                                 masks=masks, drop_rate=drop_rate)

    def reconstruct(self, images: torch.Tensor, drop_rate: float = 0.0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(reconstruction (B, 3, H, W), KL scalar or None). A Gaussian bottleneck samples in training mode."""
        patches = self.trunk(images, drop_rate=drop_rate)["patches"]
        z, kl = self.bottleneck(patches)
        return self.decoder(self._to_grid(z, images)), kl

    def clip_image(self, images: torch.Tensor, drop_rate: float = 0.0) -> torch.Tensor:
        """L2-normalised CLIP image embeddings (B, clip_dim)."""
        self._need("clip_proj", "a text tower / CLIP head")
        feats = self.semantic(images, drop_rate=drop_rate)
        pooled = feats["cls"] if self.clip_feature == "cls" else feats["patches"].mean(dim=1)
        return F.normalize(self.clip_proj(pooled), dim=-1)

    def encode_text(self, texts: list[str] | tuple[str, ...] | torch.Tensor) -> torch.Tensor:
        """L2-normalised CLIP text embeddings (B, clip_dim) from captions or BPE tokens (B, context_length)."""
        self._need("text", "a text tower")
        ctx = self.spec.text.context_length
        if isinstance(texts, (list, tuple)) and all(isinstance(t, str) for t in texts):
            tokens = _bpe(ctx)(list(texts))
        elif isinstance(texts, torch.Tensor):
            tokens = texts
        else:
            raise TypeError(f"encode_text: expected list[str] or a LongTensor, got {type(texts).__name__}")
        if tokens.ndim != 2 or tokens.shape[1] != ctx or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"text tokens: expected an integer tensor (B, {ctx}), got {tokens.dtype} "
                             f"{tuple(tokens.shape)}")
        return F.normalize(self.text(tokens.to(self.text.token_embedding.weight.device, torch.long)), dim=-1)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.encoder.blocks.grad_checkpointing = enable
        self.decoder.blocks.grad_checkpointing = enable
        if self.text is not None:
            self.text.set_grad_checkpointing(enable)

    # ---- public inference API ---------------------------------------------------------------------------
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Latents (B, d, H/p, W/p); the mean of a Gaussian bottleneck."""
        return self._to_grid(self.bottleneck.mode(self.trunk(images)["patches"]), images)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, h*p, w*p) in [-1, 1] (not clamped) from latents (B, d, h, w)."""
        return self.decoder(latents)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised CLIP image embeddings (B, clip_dim), no stochastic depth."""
        return self.clip_image(images)

    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """Linear-probe features: cls (B, D) or None, patches (B, N, D) full width, bottleneck (B, N, d)."""
        out = self.trunk(images)
        return {**out, "bottleneck": self.bottleneck.mode(out["patches"])}

    def intermediate_layers(self, images: torch.Tensor, n: int = 4) -> list[dict[str, torch.Tensor | None]]:
        """For each of the last n encoder blocks (oldest first): dict(cls=(B, D) or None, patches=(B, N, D)),
        full width through the final norm (DINOv2's `get_intermediate_layers(n, return_class_token=True)`), no
        stochastic depth, without autograd. The last entry equals `trunk(images)`; 1 <= n <= encoder depth."""
        return self.encoder.intermediate_layers(images, n)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write model.safetensors and config.json (spec + options); each file is replaced atomically."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"format": "vtp-tokenizer", "version": 1, "spec": spec_to_dict(self.spec),
                  "bottleneck_ae_only": self.bottleneck_ae_only, "clip_feature": self.clip_feature}
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        write_bytes_atomic(directory / WEIGHTS, save(state, metadata={"format": "pt"}))
        write_bytes_atomic(directory / CONFIG, json.dumps(config, indent=2).encode())

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> Tokenizer:
        directory = Path(directory)
        for name in (CONFIG, WEIGHTS):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory / name}: missing; expected a directory written by "
                                        f"Tokenizer.save_pretrained ({CONFIG} + {WEIGHTS})")
        config = json.loads((directory / CONFIG).read_text())
        if config.get("format") != "vtp-tokenizer":
            raise ValueError(f"{directory / CONFIG}: expected format 'vtp-tokenizer', got {config.get('format')!r}")
        tok = cls(spec_from_dict(config["spec"]), config["bottleneck_ae_only"], config["clip_feature"])
        tok.load_state_dict(load_file(directory / WEIGHTS, device=str(device)), strict=True)
        return tok.to(device)

    # ---- helpers ----------------------------------------------------------------------------------------
    def _to_grid(self, tokens: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        h, w = (s // self.spec.patch for s in images.shape[-2:])
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)

    def _need(self, attr: str, what: str) -> None:
        if getattr(self, attr) is None:
            raise ValueError(f"size {self.spec.name!r} has no {what}")
