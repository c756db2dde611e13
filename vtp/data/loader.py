"""Loaders over the shards in `cfg.shard_dir`: an endless training stream and a deterministic evaluation pass.

Every batch is a dict:
    image    float32 (B, 3, R, R) in [-1, 1] (the library's image convention)
    caption  list[str]
    labels   {label set: int64 (B,)}  (the sets in the manifest's `label_sets`)
    key      list[str]

Training stream: each (rank, worker) slot reads an endless sequence of shards. In every cycle the shards are
permuted (seeded by `seed` and the cycle, identical on all ranks) and dealt out round-robin, so the ranks and
workers of one cycle read disjoint shards; with fewer shards than slots, each slot draws shards with replacement.
Samples pass a shuffle buffer and are batched inside the workers. The stream never ends, so every rank yields
the same number of batches (use `batches=` for a fixed-length pass); it is fully determined by (seed, rank,
world_size, number of workers).
"""
from __future__ import annotations

import io
import itertools
import json
import logging
import math
import random
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from vtp.config import Config
from vtp.data import manifest as mf
from vtp.data.shards import list_shards

IMAGE_KEYS = ("png", "jpg", "jpeg", "webp")
log = logging.getLogger("vtp.data.loader")


def _missing(cfg: Config, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{what} in {cfg.shard_dir}; create the dataset with `vtp ingest --source synthetic --out {cfg.data.root} "
        f"--name {cfg.data.dataset}` (or --source folder|pairs|shards --path PATH)")


def read_manifest(cfg: Config) -> dict:
    """The dataset's manifest.json (raises FileNotFoundError naming the command that creates it)."""
    if not (cfg.shard_dir / "manifest.json").is_file():
        raise _missing(cfg, "no manifest.json")
    return mf.read(cfg.shard_dir)


def _shards(cfg: Config, split: str) -> tuple[dict, list[str]]:
    if split not in mf.SPLITS:
        raise ValueError(f"split {split!r}: expected one of {', '.join(mf.SPLITS)}")
    manifest = read_manifest(cfg)
    if manifest["resolution"] != cfg.data.resolution:
        raise ValueError(f"{cfg.shard_dir} holds {manifest['resolution']} px images but data.resolution = "
                         f"{cfg.data.resolution}; re-ingest with --resolution {cfg.data.resolution} or set "
                         f"data.resolution: {manifest['resolution']}")
    urls = [str(p) for p in list_shards(cfg.shard_dir, split)]
    if not urls:
        raise _missing(cfg, f"no {split}-*.tar shards")
    return manifest, urls


def decode_sample(sample: dict, resolution: int) -> dict:
    """A raw WebDataset sample -> {"image": uint8 (R, R, 3), "caption", "labels", "key"}."""
    ext = next((k for k in IMAGE_KEYS if k in sample), None)
    where = f"{sample.get('__url__')}:{sample.get('__key__')}"
    if ext is None:
        raise ValueError(f"{where}: no image (expected one of .{', .'.join(IMAGE_KEYS)}; found {sorted(sample)})")
    img = Image.open(io.BytesIO(sample[ext]))
    img = img.convert("RGB") if img.mode != "RGB" else img
    if img.size != (resolution, resolution):
        raise ValueError(f"{where}: image is {img.size[0]}x{img.size[1]}, expected {resolution}x{resolution}")
    meta = json.loads(sample["json"]) if "json" in sample else {}
    caption = sample["txt"].decode("utf-8") if "txt" in sample else meta.get("caption", "")
    return {"image": np.asarray(img), "caption": caption, "labels": meta.get("labels", {}),
            "key": sample["__key__"]}


def collate(samples: list[dict], label_sets: list[str]) -> dict:
    images = torch.from_numpy(np.stack([s["image"] for s in samples])).permute(0, 3, 1, 2)
    try:
        labels = {k: torch.tensor([s["labels"][k] for s in samples], dtype=torch.long) for k in label_sets}
    except KeyError as e:
        raise ValueError(f"a sample lacks label set {e.args[0]!r} named in the manifest") from None
    return {"image": images.float().div_(127.5).sub_(1.0), "caption": [s["caption"] for s in samples],
            "labels": labels, "key": [s["key"] for s in samples]}


def _slot() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


class _TrainStream(IterableDataset):
    """The batches of one rank's worker (see the module docstring for how shards are dealt)."""

    def __init__(self, urls: list[str], seed: int, rank: int, world_size: int, batch_size: int,
                 shuffle_buffer: int, resolution: int, label_sets: list[str]):
        super().__init__()
        self.urls, self.seed, self.rank, self.world_size = urls, seed, rank, world_size
        self.batch_size, self.shuffle_buffer, self.resolution = batch_size, shuffle_buffer, resolution
        self.label_sets = label_sets

    def _shard_urls(self, slot: int, slots: int) -> Iterator[dict]:
        for cycle in itertools.count():
            order = list(range(len(self.urls)))
            random.Random(f"vtp-shards-{self.seed}-{cycle}").shuffle(order)
            if len(order) >= slots:
                picks = order[slot::slots]
            else:
                picks = [random.Random(f"vtp-shards-{self.seed}-{cycle}-{slot}").randrange(len(order))]
            for i in picks:
                yield {"url": self.urls[i]}

    def __iter__(self) -> Iterator[dict]:
        import webdataset as wds

        worker, workers = _slot()
        slot, slots = self.rank * workers + worker, self.world_size * workers
        samples = wds.tarfile_to_samples()(self._shard_urls(slot, slots))
        if self.shuffle_buffer > 1:
            rng = random.Random(f"vtp-shuffle-{self.seed}-{slot}-{slots}")
            samples = wds.shuffle(self.shuffle_buffer, self.shuffle_buffer, rng=rng)(samples)
        decoded = (decode_sample(s, self.resolution) for s in samples)
        while True:
            yield collate(list(itertools.islice(decoded, self.batch_size)), self.label_sets)


class TrainLoader:
    """Iterable of training batches: endless, or `batches` long; each `iter()` restarts the same stream."""

    def __init__(self, stream: _TrainStream, num_workers: int, batches: int | None):
        self.stream, self.num_workers, self.batches = stream, num_workers, batches

    def __iter__(self) -> Iterator[dict]:
        loader = DataLoader(self.stream, batch_size=None, num_workers=self.num_workers,
                            pin_memory=torch.cuda.is_available())
        return iter(loader) if self.batches is None else itertools.islice(loader, self.batches)


def train_loader(cfg: Config, batch_size: int, rank: int = 0, world_size: int = 1, seed: int | None = None, *,
                 num_workers: int | None = None, batches: int | None = None) -> TrainLoader:
    """The training stream of `rank` out of `world_size` (local `batch_size` images per batch)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank}: expected 0 <= rank < world_size = {world_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size}: expected >= 1")
    manifest, urls = _shards(cfg, "train")
    stream = _TrainStream(urls, cfg.seed if seed is None else seed, rank, world_size, batch_size,
                          cfg.data.shuffle_buffer, cfg.data.resolution, list(manifest["label_sets"]))
    return TrainLoader(stream, cfg.data.loader_workers if num_workers is None else num_workers, batches)


class EvalLoader:
    """The first `num_samples` samples of a split, in shard order, every time (single process: the order must
    not depend on a worker count). The last batch may be smaller."""

    def __init__(self, urls: list[str], count: int, batch_size: int, resolution: int, label_sets: list[str]):
        self.urls, self.count, self.batch_size = urls, count, batch_size
        self.resolution, self.label_sets = resolution, label_sets

    def __len__(self) -> int:
        return math.ceil(self.count / self.batch_size)

    def __iter__(self) -> Iterator[dict]:
        import webdataset as wds

        samples = wds.tarfile_to_samples()(iter({"url": u} for u in self.urls))
        decoded = (decode_sample(s, self.resolution) for s in itertools.islice(samples, self.count))
        while batch := list(itertools.islice(decoded, self.batch_size)):
            yield collate(batch, self.label_sets)


def eval_loader(cfg: Config, split: str = "val", batch_size: int = 64, num_samples: int | None = None) -> EvalLoader:
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size}: expected >= 1")
    manifest, urls = _shards(cfg, split)
    available = manifest["splits"][split]["count"]
    if num_samples is not None and num_samples > available:
        log.warning("eval_loader: %d %s samples asked for, %s holds %d; using %d", num_samples, split,
                    cfg.shard_dir, available, available)
    count = available if num_samples is None else min(num_samples, available)
    return EvalLoader(urls, count, batch_size, cfg.data.resolution, list(manifest["label_sets"]))
