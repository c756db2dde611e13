"""The training stream: local micro-batches, resumable at any micro-step.

The stream is cut into chunks of `CHUNK` micro-batches; chunk c reads from a loader seeded by (seed, c). Resuming
at micro-step m re-creates chunk m // CHUNK and skips m % CHUNK batches, so a resumed run reads exactly the
batches an uninterrupted one would, while skipping at most one chunk of decoding.
"""
from __future__ import annotations

import itertools
from typing import Callable, Iterator

from vtp.config import Config
from vtp.train.runtime import step_seed

CHUNK = 1000

Loader = Callable[[int], Iterator[dict]]  # seed -> infinite iterator of local micro-batches


def webdataset_loader(cfg: Config, micro_batch: int, rank: int, world: int) -> Loader:
    from vtp.data.loader import train_loader

    def make(seed: int) -> Iterator[dict]:
        return iter(train_loader(cfg, micro_batch, rank=rank, world_size=world, seed=seed))

    return make


def stream(loader: Loader, seed: int, start: int) -> Iterator[dict]:
    chunk, skip = divmod(start, CHUNK)
    while True:
        it = itertools.islice(loader(step_seed(seed, chunk)), skip, CHUNK)
        yield from it
        chunk, skip = chunk + 1, 0


def memory_loader(images, captions: list[str], micro_batch: int, rank: int = 0, world: int = 1) -> Loader:
    """Image-caption batches from tensors already in memory (tests, debugging, tiny data sets)."""
    if len(images) != len(captions):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    return memory_batches({"image": images, "caption": captions}, micro_batch, rank, world,
                          extra={"labels": {}})


def memory_batches(columns: dict, micro_batch: int, rank: int = 0, world: int = 1, extra: dict | None = None
                   ) -> Loader:
    """Batches of equal-length columns (tensors or lists) held in memory: each seed draws global micro-batches
    and every rank takes its slice, so the global batch is the same at any world size."""
    import torch

    lengths = {k: len(v) for k, v in columns.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"columns of different lengths: {lengths}")
    n = next(iter(lengths.values()))

    def make(seed: int) -> Iterator[dict]:
        g = torch.Generator().manual_seed(seed)
        while True:
            rows = torch.randint(n, (micro_batch * world,), generator=g)[rank * micro_batch:
                                                                         (rank + 1) * micro_batch]
            batch = {k: v[rows] if isinstance(v, torch.Tensor) else [v[i] for i in rows.tolist()]
                     for k, v in columns.items()}
            yield {**batch, **(extra or {}), "key": [str(i) for i in rows.tolist()]}

    return make
