"""Tiny training configurations and in-memory data shared by the training tests."""
from __future__ import annotations

from pathlib import Path

import torch

from vtp.config import Config, load_config
from vtp.train.data import memory_loader

REPO = Path(__file__).resolve().parents[1]

TINY = ["model.size=tiny", "model.bottleneck_dim=8", "data.resolution=32", "aug.global_crop_size=32",
        "aug.local_crop_size=16",
        "aug.local_crops=2", "train.batch_size=8", "train.warmup_steps=1", "train.log_every=1",
        "train.image_every=1000", "loss.lpips_net=alex", "model.drop_path.clip=0", "model.drop_path.ssl=0"]


def tiny_config(runs: Path, name: str = "vtp", *extra: str, steps: int = 3) -> Config:
    return load_config(name, [*TINY, f"train.steps={steps}", f"runs_root={runs}", *extra], REPO / "params.yaml")


def tiny_data(n: int = 32, size: int = 32) -> tuple[torch.Tensor, list[str]]:
    g = torch.Generator().manual_seed(1)
    images = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    captions = [f"image {i} is {'bright' if images[i].mean() > 0 else 'dark'}" for i in range(n)]
    return images, captions


def tiny_loader(cfg: Config, rank: int = 0, world: int = 1):
    images, captions = tiny_data()
    return memory_loader(images, captions, cfg.train.batch_size // world // cfg.train.grad_accum, rank, world)
