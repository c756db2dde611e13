"""The training stream: local micro-batches, resumable at any micro-step.

A loader is cut into epochs of the same number of micro-batches on every rank (`Epochs`), each determined by
(seed, epoch): resuming at micro-step m opens epoch m // batches at its batch m % batches, so a resumed run reads
exactly the batches an uninterrupted one would. The webdataset loader's epochs are passes over the shards, each
one fresh DataLoader (`vtp.data.loader`), and it skips to a batch without decoding pixels. A plain loader,
seed -> endless iterator (in-memory data, the latent shards), is read in epochs of `CHUNK` batches, epoch e from
the seed step_seed(seed, e), so that resuming it skips at most one chunk.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Iterator, Union

from vtp.config import Config
from vtp.train.runtime import step_seed

CHUNK = 1000


@dataclass(frozen=True)
class Epochs:
    """`open(seed, epoch, skip)` iterates batches skip..batches-1 of that epoch of this rank's stream. Calling it
    with a seed gives the whole stream, like a plain loader."""
    open: Callable[[int, int, int], Iterator[dict]]
    batches: int

    def __call__(self, seed: int) -> Iterator[dict]:
        return stream(self, seed, 0)


Loader = Union[Epochs, Callable[[int], Iterator[dict]]]  # a plain loader: seed -> endless iterator of micro-batches


def epochs(loader: Loader) -> Epochs:
    if isinstance(loader, Epochs):
        return loader
    return Epochs(lambda seed, epoch, skip: itertools.islice(loader(step_seed(seed, epoch)), skip, CHUNK), CHUNK)


def webdataset_loader(cfg: Config, micro_batch: int, rank: int, world: int) -> Epochs:
    from vtp.data.loader import train_loader

    def make(seed: int):
        return train_loader(cfg, micro_batch, rank=rank, world_size=world, seed=seed)

    return Epochs(lambda seed, epoch, skip: make(seed).epoch(epoch, skip), make(cfg.seed).epoch_batches)


def stream(loader: Loader, seed: int, start: int) -> Iterator[dict]:
    """This rank's micro-batches from micro-step `start` on, forever."""
    ep = epochs(loader)
    epoch, skip = divmod(start, ep.batches)
    while True:
        n = skip
        for batch in ep.open(seed, epoch, skip):
            n += 1
            yield batch
        if n != ep.batches:  # every rank must see the same epoch length, or the ranks' steps drift apart
            raise RuntimeError(f"epoch {epoch} of the training stream had {n} batches; expected {ep.batches}")
        epoch, skip = epoch + 1, 0


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
