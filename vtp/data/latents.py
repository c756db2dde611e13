"""Latent shards for DiT training: the training split encoded once as is and once horizontally flipped, with
per-channel statistics (VTP latents have a std near 0.1: the DiT trains on standardised latents).

Layout of `runs/<cfg>/latents/` (one DVC output, so the statistics travel with the latents):
    latents-rRR-NNNNNN.tar   a sample: `latent.npy` float32 (C, H, W), `flip.npy` (the flipped image's),
                             `json` {"labels": {set: index}}, `txt` caption; one series of shards per rank
    stats.json               {"mean": [C], "std": [C], "count": N}: over the unflipped training latents,
                             per channel over samples and positions (LightningDiT's dims [0, 2, 3])
    manifest.json            shape, count, label sets, the tokenizer it came from (path, sha256)

Training reads the shards through webdataset's own pipeline: resampled shards seeded per rank (so every rank
draws an endless, equally long stream), a seeded shuffle buffer, and a per-sample choice of the flipped latent
seeded by (seed, key); `vtp.train.data.stream` makes it resumable at any micro-step.
"""
from __future__ import annotations

import hashlib
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from vtp.fileio import write_json_atomic

STATS, MANIFEST = "stats.json", "manifest.json"


@dataclass(frozen=True)
class LatentStats:
    """Per-channel mean and std; `normalize` before the DiT, `denormalize` (its exact inverse) before decoding."""
    mean: tuple[float, ...]
    std: tuple[float, ...]
    count: int

    def _shaped(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if like.shape[1] != len(self.mean):
            raise ValueError(f"latents have {like.shape[1]} channels; the statistics describe {len(self.mean)}")
        view = (1, -1, *([1] * (like.ndim - 2)))
        mean = torch.tensor(self.mean, dtype=torch.float64, device=like.device).view(view)
        std = torch.tensor(self.std, dtype=torch.float64, device=like.device).view(view)
        return mean, std

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._shaped(z)
        return ((z.double() - mean) / std).to(z.dtype)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._shaped(z)
        return (z.double() * std + mean).to(z.dtype)

    def save(self, directory: Path) -> None:
        write_json_atomic(Path(directory) / STATS, {"mean": list(self.mean), "std": list(self.std),
                                                    "count": self.count})

    @classmethod
    def load(cls, directory: Path) -> "LatentStats":
        path = Path(directory) / STATS
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; run `vtp latents --config NAME` first")
        data = json.loads(path.read_text())
        return cls(tuple(data["mean"]), tuple(data["std"]), int(data["count"]))


class StatsAccumulator:
    """float64 per-channel sums, all-reduced across ranks at the end."""

    def __init__(self, channels: int):
        self.sums = torch.zeros(3, channels, dtype=torch.float64)  # count, sum, sum of squares

    def add(self, z: torch.Tensor) -> None:
        z = z.detach().double().cpu().transpose(0, 1).flatten(1)  # (C, B*H*W)
        self.sums += torch.stack([torch.full((z.shape[0],), z.shape[1], dtype=torch.float64), z.sum(1),
                                  z.square().sum(1)])

    def result(self, samples: int) -> LatentStats:
        from vtp import dist as vdist

        n, s, sq = vdist.all_reduce_sum(self.sums.clone()).unbind(0)
        mean = s / n
        std = (sq / n - mean.square()).clamp_min(0).sqrt()
        return LatentStats(tuple(mean.tolist()), tuple(std.tolist()), samples)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def read_manifest(directory: Path) -> dict:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; run `vtp latents --config NAME` first")
    return json.loads(path.read_text())


def shard_urls(directory: Path) -> list[str]:
    urls = sorted(str(p) for p in Path(directory).glob("latents-r*-*.tar"))
    if not urls:
        raise FileNotFoundError(f"{directory}: no latents-r*-*.tar shards; run `vtp latents --config NAME` first")
    return urls


def _decode(sample: dict, label: str, rng_seed: int, flip: bool) -> dict:
    key = sample["__key__"]
    use_flip = flip and "flip.npy" in sample and random.Random(f"{rng_seed}-{key}").random() < 0.5
    latent = np.load(io.BytesIO(sample["flip.npy" if use_flip else "latent.npy"]), allow_pickle=False)
    meta = json.loads(sample["json"])
    return {"latent": torch.from_numpy(latent), "label": int(meta["labels"][label]), "key": key}


def _collate(samples: list[dict]) -> dict:
    return {"latent": torch.stack([s["latent"] for s in samples]),
            "label": torch.tensor([s["label"] for s in samples], dtype=torch.long),
            "key": [s["key"] for s in samples]}


def latent_loader(directory: Path, micro_batch: int, rank: int, label: str, flip: bool = True,
                  shuffle_buffer: int = 2000):
    """A `vtp.train.data.Loader`: seed -> endless iterator of this rank's micro-batches of raw latents."""
    import webdataset as wds

    urls = shard_urls(directory)

    def make(seed: int) -> Iterator[dict]:
        stages = [wds.ResampledShards(urls, seed=seed, worker_seed=lambda: rank, deterministic=True),
                  wds.tarfile_to_samples()]
        if shuffle_buffer > 1:
            stages.append(wds.shuffle(shuffle_buffer, initial=shuffle_buffer,
                                      rng=random.Random(f"vtp-latents-{seed}-{rank}")))
        stages += [wds.map(lambda s: _decode(s, label, seed, flip)),
                   wds.batched(micro_batch, collation_fn=_collate, partial=False)]
        return iter(wds.DataPipeline(*stages))

    return make
