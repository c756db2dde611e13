"""Tokenizers from outside vtp under our inference API, and `load_tokenizer`, which opens either kind.

A diffusers `AutoencoderKL` directory (SD-VAE, VA-VAE, ...: config.json with "_class_name": "AutoencoderKL" and
diffusion_pytorch_model.safetensors) is wrapped by `DiffusersVAE`: `encode` / `decode` with our conventions
(images (B, 3, H, W) in [-1, 1], latents (B, C, H/f, W/f)), so `vtp evaluate`, `vtp latents` and everything that
decodes latents score it on the same protocol as our tokenizers. It has no text tower and no semantic features:
the evaluation records understanding as not applicable. diffusers is imported only when such a directory is
loaded.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vtp.models import tokenizer
from vtp.models.registry import LatentGrid

VTP, DIFFUSERS = "vtp-tokenizer", "diffusers-autoencoderkl"
WEIGHTS = {VTP: tokenizer.WEIGHTS, DIFFUSERS: "diffusion_pytorch_model.safetensors"}
EXPECTED = (f"a vtp tokenizer (config.json with \"format\": \"{VTP}\" + {WEIGHTS[VTP]}) or a diffusers "
            f"AutoencoderKL (config.json with \"_class_name\": \"AutoencoderKL\" + {WEIGHTS[DIFFUSERS]})")


@dataclass(frozen=True)
class ExternalSpec(LatentGrid):
    """What callers read from `tok.spec`, for a tokenizer that is not built from a vtp size."""
    name: str
    bottleneck_dim: int  # latent channels
    patch: int  # downsample factor: latents are (bottleneck_dim, H / patch, W / patch)
    text: None = None  # no text tower (vtp.eval.features.has_text_tower)


class DiffusersVAE(nn.Module):
    """A diffusers `AutoencoderKL` with `Tokenizer`'s `encode` / `decode`; no understanding methods."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae
        c, f = vae.config.latent_channels, 2 ** (len(vae.config.block_out_channels) - 1)
        self.spec = ExternalSpec(f"diffusers-AutoencoderKL-f{f}c{c}", c, f)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> DiffusersVAE:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(directory, use_safetensors=True, local_files_only=True)
        return cls(vae).to(device)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Latents (B, C, H/f, W/f): the posterior mode (its mean), not a sample, so latents are deterministic
        like our tokenizers'. Not multiplied by `scaling_factor`: the DiT trains on latents standardised per
        channel (vtp.data.latents.LatentStats), which subsumes that global scale."""
        return self.vae.encode(images).latent_dist.mode()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] (not clamped) from raw latents (B, C, h, w)."""
        return self.vae.decode(latents).sample


def tokenizer_format(directory: str | Path) -> str:
    """VTP or DIFFUSERS, from the directory's config.json."""
    path = Path(directory) / tokenizer.CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; expected {EXPECTED}")
    config = json.loads(path.read_text())
    if config.get("format") == VTP:
        return VTP
    if config.get("_class_name") == "AutoencoderKL":
        return DIFFUSERS
    raise ValueError(f"{path}: unknown tokenizer format (format {config.get('format')!r}, _class_name "
                     f"{config.get('_class_name')!r}); expected {EXPECTED}")


def weights_file(directory: str | Path) -> Path:
    """The directory's weights file, named by its format (what the latents' manifest hashes)."""
    return Path(directory) / WEIGHTS[tokenizer_format(directory)]


def load_tokenizer(directory: str | Path, device: str | torch.device = "cpu") -> tokenizer.Tokenizer | DiffusersVAE:
    """A vtp `Tokenizer` or a `DiffusersVAE`, whichever format `directory` holds; safetensors weights only."""
    fmt = tokenizer_format(directory)
    weights = Path(directory) / WEIGHTS[fmt]
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: missing; expected {EXPECTED}")
    return (tokenizer.Tokenizer if fmt == VTP else DiffusersVAE).from_pretrained(directory, device)
