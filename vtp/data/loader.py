"""Loaders over the shards in `cfg.shard_dir`: the training stream in fixed epochs and a deterministic evaluation pass.

Every batch is a dict:
    image            float32 (B, 3, R, R) in [-1, 1] (the library's image convention)
    caption          list[str]
    labels           {label set: int64 (B,)}  (the sets in the manifest's `label_sets`)
    key              list[str]
    skipped_samples  int: bad samples dropped while assembling this batch

Training stream (webdataset's pipeline, one per DataLoader worker): an epoch is `epoch_batches` full batches on
every rank, about one pass over the split (the manifest's train count // (world size x batch)). Epoch e deals a
permutation of the shards seeded by (seed, e) out to the (rank, worker) slots (node splitting, then worker
splitting), so the slots of one epoch read disjoint shards; a slot that runs out before its share of the epoch
reads further rounds of freshly permuted shards (with fewer shards than slots, the list is repeated until every
slot has one). Each round of a slot passes a seeded shuffle buffer; batches are assembled inside the workers, and
batch i of an epoch comes from worker i mod workers. The stream is fully determined by (seed, rank, world size,
number of workers), and `epoch(e, skip)` starts at batch `skip` without decoding the pixels of the batches before.

Bad samples (no image, an unreadable or wrong-size image, broken metadata, an unreadable tar member) are skipped,
counted in `skipped_samples` and logged (rate-limited); the batch takes the next good sample. Whether a sample is
bad is decided by `check_sample`, which reads headers and checksums but no pixels, so skipping on resume makes
the same choices as the uninterrupted run; the rare image that passes it but still fails to decode (a JPEG cut
short after a valid header) is replaced by a copy of another sample of its batch, so later batches never shift.
"""
from __future__ import annotations

import io
import itertools
import json
import logging
import math
import random
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

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


# -- one sample ----------------------------------------------------------------------------------------------------
def _where(sample: dict) -> str:
    return f"{sample.get('__url__')}:{sample.get('__key__')}"


def _parse(sample: dict, resolution: int, label_sets) -> tuple[Image.Image, str, dict]:
    """Everything about a sample but its pixels (the image is opened, not decoded)."""
    where = _where(sample)
    ext = next((k for k in IMAGE_KEYS if k in sample), None)
    if ext is None:
        raise ValueError(f"{where}: no image (expected one of .{', .'.join(IMAGE_KEYS)}; found {sorted(sample)})")
    try:
        img = Image.open(io.BytesIO(sample[ext]))
        meta = json.loads(sample["json"]) if "json" in sample else {}
        caption = sample["txt"].decode("utf-8") if "txt" in sample else meta.get("caption", "")
        labels = meta.get("labels", {})
    except Exception as e:  # noqa: BLE001 - decoders meet hostile bytes; the caller skips and counts the sample
        raise ValueError(f"{where}: {type(e).__name__}: {e}") from None
    if img.size != (resolution, resolution):
        raise ValueError(f"{where}: image is {img.size[0]}x{img.size[1]}, expected {resolution}x{resolution}")
    missing = [k for k in label_sets if not isinstance(labels, dict) or k not in labels]
    if missing:
        raise ValueError(f"{where}: no {', '.join(missing)} label (a label set named in the manifest)")
    return img, caption, labels


def check_sample(sample: dict, resolution: int, label_sets=()) -> None:
    """Raise ValueError (naming url:key) for a bad sample without decoding pixels: the image header and size, the
    metadata, and the format's own checksums (PNG: every chunk's CRC)."""
    img, _, _ = _parse(sample, resolution, label_sets)
    try:
        img.verify()
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{_where(sample)}: {type(e).__name__}: {e}") from None


def decode_sample(sample: dict, resolution: int, label_sets=()) -> dict:
    """A raw WebDataset sample -> {"image": uint8 (R, R, 3), "caption", "labels", "key"}; a bad sample raises
    ValueError naming url:key."""
    img, caption, labels = _parse(sample, resolution, label_sets)
    try:
        img.load()  # explicitly: np.asarray may hide a failed load behind an object array
        pixels = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{_where(sample)}: {type(e).__name__}: {e}") from None
    return {"image": pixels, "caption": caption, "labels": labels, "key": sample["__key__"]}


def _decode_or_skip(sample: dict, resolution: int, label_sets, skips: "_Skips") -> dict | None:
    """The decoded sample, or None after counting and logging why it is bad."""
    try:
        return decode_sample(sample, resolution, label_sets)
    except ValueError as e:
        skips.add(str(e))
        return None


def collate(samples: list[dict], label_sets: list[str]) -> dict:
    images = torch.from_numpy(np.stack([s["image"] for s in samples])).permute(0, 3, 1, 2)
    try:
        labels = {k: torch.tensor([s["labels"][k] for s in samples], dtype=torch.long) for k in label_sets}
    except KeyError as e:
        raise ValueError(f"a sample lacks label set {e.args[0]!r} named in the manifest") from None
    return {"image": images.float().div_(127.5).sub_(1.0), "caption": [s["caption"] for s in samples],
            "labels": labels, "key": [s["key"] for s in samples]}


class _Skips:
    """Counts the bad samples of one pipeline; logs them rate-limited (the first 10 of a process, then 1 in 1000)."""
    logged = 0  # per process

    def __init__(self):
        self.count, self.quiet = 0, False

    def add(self, why: str) -> None:
        self.count += 1
        if self.quiet:  # batches a resumed run skips over: the run before reported and counted them
            return
        _Skips.logged += 1
        if _Skips.logged <= 10 or _Skips.logged % 1000 == 0:
            log.warning("skipped bad sample %s (%d in this process%s)", why, _Skips.logged,
                        "; from now on 1 in 1000 is logged" if _Skips.logged == 10 else "")

    def tar_error(self, exn: Exception) -> bool:
        """A webdataset handler: an unreadable shard or tar member is skipped and counted, never fatal."""
        self.add(f"(unreadable tar data: {type(exn).__name__}: {exn})")
        return True

    def take(self) -> int:
        n, self.count = self.count, 0
        return n


# -- the training stream -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Spec:
    urls: tuple[str, ...]
    seed: int
    rank: int
    world_size: int
    batch_size: int
    shuffle_buffer: int
    resolution: int
    label_sets: tuple[str, ...]


def _split(index: int, count: int):
    """A pipeline stage keeping every `count`-th shard from `index` on: webdataset's split_by_node/_by_worker read
    the rank and worker from the process, but here they are given, so any process can rebuild any slot's stream."""
    return lambda src: itertools.islice(src, index, None, count)


def _share(n: int, part: int, parts: int) -> int:
    """How many of items 0..n-1, dealt round-robin, fall to `part`."""
    return n // parts + (part < n % parts)


def _slot_samples(spec: _Spec, epoch: int, worker: int, workers: int, skips: _Skips) -> Iterator[dict]:
    """The raw samples of one (rank, worker) slot in one epoch: endless rounds of permuted shards (round 0 is
    disjoint between slots); the shuffle buffer drains at the end of each round, so later rounds never mix in."""
    import webdataset as wds

    copies = -(-spec.world_size * workers // len(spec.urls))  # fewer shards than slots: every slot gets one
    empty = 0
    for rnd in itertools.count():
        slot = f"{spec.seed}-{epoch}-{rnd}-{spec.rank}-{spec.world_size}-{worker}-{workers}"
        buffer = spec.shuffle_buffer
        shuffle = wds.shuffle(buffer, initial=buffer, rng=random.Random(f"vtp-shuffle-{slot}")) if buffer > 1 else None
        read = 0
        for sample in wds.DataPipeline(
                wds.SimpleShardList(list(spec.urls) * copies, seed=f"vtp-shards-{spec.seed}-{epoch}-{rnd}"),
                _split(spec.rank, spec.world_size), _split(worker, workers),
                wds.tarfile_to_samples(handler=skips.tar_error),
                shuffle):
            read += 1
            yield sample
        empty = 0 if read else empty + 1
        if empty > 10 + len(spec.urls):
            raise RuntimeError(f"no readable sample in {empty} rounds over {len(spec.urls)} shards like "
                               f"{spec.urls[0]}")


def _batches(samples: Iterator[dict], spec: _Spec, quota: int, skip: int, skips: _Skips) -> Iterator[dict]:
    """`quota` full batches of good samples, of which the first `skip` are only counted off (checked, not decoded)."""
    in_a_row = 0
    for i in range(quota):
        skips.quiet, picked = i < skip, []
        while len(picked) < spec.batch_size:
            sample = next(samples)
            try:
                check_sample(sample, spec.resolution, spec.label_sets)
            except ValueError as e:
                skips.add(str(e))
                in_a_row += 1
                if in_a_row >= 1000:
                    raise RuntimeError(f"{in_a_row} bad samples in a row; the last: {e}") from None
                continue
            in_a_row = 0
            picked.append(sample)
        if i < skip:
            skips.take()
            continue
        decoded = [_decode_or_skip(sample, spec.resolution, spec.label_sets, skips) for sample in picked]
        good = [d for d in decoded if d is not None]
        if not good:
            raise RuntimeError(f"no sample of a batch decodes, e.g. {_where(picked[0])}")
        # A copy rather than another draw: the positions that a resumed run finds without decoding stay the same.
        decoded = [d if d is not None else good[j % len(good)] for j, d in enumerate(decoded)]
        yield {**collate(decoded, list(spec.label_sets)), "skipped_samples": skips.take()}


def _slot() -> tuple[int, int]:
    info = get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


class _Epoch(IterableDataset):
    """One epoch of one rank from its batch `skip` on; every DataLoader worker runs its own pipeline."""

    def __init__(self, spec: _Spec, epoch: int, batches: int, skip: int):
        super().__init__()
        self.spec, self.epoch, self.batches, self.skip = spec, epoch, batches, skip

    def __iter__(self) -> Iterator[dict]:
        worker, workers = _slot()
        # Batch i belongs to worker i mod workers. The DataLoader takes batches round-robin from its worker 0 on,
        # so after `skip` batches its worker w plays the part of worker (w + skip) mod workers.
        part = (worker + self.skip) % workers
        skips = _Skips()
        samples = _slot_samples(self.spec, self.epoch, part, workers, skips)
        return _batches(samples, self.spec, _share(self.batches, part, workers), _share(self.skip, part, workers),
                        skips)


class TrainLoader:
    """A rank's training stream: epochs of `epoch_batches` batches. `iter()` runs the epochs from 0 on, endless (or
    `batches` long), the same every time."""

    def __init__(self, spec: _Spec, epoch_batches: int, num_workers: int, batches: int | None):
        self.spec, self.epoch_batches, self.num_workers, self.batches = spec, epoch_batches, num_workers, batches

    def epoch(self, epoch: int, skip: int = 0) -> Iterator[dict]:
        """Epoch `epoch` from its batch `skip` on (one fresh DataLoader, so one shuffle-buffer fill per epoch)."""
        import webdataset as wds

        if not 0 <= skip <= self.epoch_batches:
            raise ValueError(f"skip {skip}: expected 0 <= skip <= epoch_batches = {self.epoch_batches}")
        return iter(wds.WebLoader(_Epoch(self.spec, epoch, self.epoch_batches, skip), batch_size=None,
                                  num_workers=self.num_workers, pin_memory=torch.cuda.is_available()))

    def __iter__(self) -> Iterator[dict]:
        endless = itertools.chain.from_iterable(self.epoch(e) for e in itertools.count())
        return endless if self.batches is None else itertools.islice(endless, self.batches)


def train_loader(cfg: Config, batch_size: int, rank: int = 0, world_size: int = 1, seed: int | None = None, *,
                 num_workers: int | None = None, batches: int | None = None) -> TrainLoader:
    """The training stream of `rank` out of `world_size` (local `batch_size` images per batch)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank}: expected 0 <= rank < world_size = {world_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size}: expected >= 1")
    manifest, urls = _shards(cfg, "train")
    spec = _Spec(tuple(urls), cfg.seed if seed is None else seed, rank, world_size, batch_size,
                 cfg.data.shuffle_buffer, cfg.data.resolution, tuple(manifest["label_sets"]))
    epoch_batches = max(1, manifest["splits"]["train"]["count"] // (world_size * batch_size))
    return TrainLoader(spec, epoch_batches, cfg.data.loader_workers if num_workers is None else num_workers, batches)


# -- the evaluation pass -------------------------------------------------------------------------------------------


class EvalLoader:
    """The first `num_samples` good samples of a split, in shard order, every time (single process: the order must
    not depend on a worker count). Bad samples are skipped and counted (`skipped_samples`, per batch and per pass);
    the last batch may be smaller, and with bad samples there may be fewer batches than `len()`."""

    def __init__(self, urls: list[str], count: int, batch_size: int, resolution: int, label_sets: list[str]):
        self.urls, self.count, self.batch_size = urls, count, batch_size
        self.resolution, self.label_sets = resolution, label_sets
        self.skipped_samples = 0  # in the last pass

    def __len__(self) -> int:
        return math.ceil(self.count / self.batch_size)

    def __iter__(self) -> Iterator[dict]:
        import webdataset as wds

        skips, left, self.skipped_samples = _Skips(), self.count, 0
        samples = wds.tarfile_to_samples(handler=skips.tar_error)(iter({"url": u} for u in self.urls))
        while left > 0:
            batch = []
            for sample in samples:
                if (d := _decode_or_skip(sample, self.resolution, self.label_sets, skips)) is None:
                    continue
                batch.append(d)
                if len(batch) == min(self.batch_size, left):
                    break
            if not batch:
                break
            left -= len(batch)
            skipped = skips.take()
            self.skipped_samples += skipped
            yield {**collate(batch, self.label_sets), "skipped_samples": skipped}
        self.skipped_samples += skips.take()


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
