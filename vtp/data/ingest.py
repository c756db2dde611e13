"""`vtp ingest`: inputs -> `<out>/<name>/{train,val}-NNNNNN.tar` + `manifest.json` + `run.json`.

Sources: `synthetic` (the embedded generator), `folder` (one sub-folder per class), `pairs` (a JSONL / CSV /
Parquet table of path, caption[, label]) and `shards` (existing WebDataset shards, validated and re-sharded).

Each input is read, checked and converted in a worker process (`vtp.data.preprocess`); the main process drops
exact duplicates, assigns the split and writes shards. Bad inputs are skipped, counted and listed in the
manifest; the run goes on. Inputs are processed in the order of a hash of their names, so equal input gives
byte-identical shards (re-running is idempotent) and classes mix within every shard.

Everything is written into `<out>/.<name>.partial/` and swapped into place only when complete: an interrupted
run leaves the previous dataset untouched, and no shard is ever visible under its final name half-written.
"""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import shutil
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator

from vtp.config import Config, to_dict
from vtp.data import manifest as mf
from vtp.data import synthetic
from vtp.data.preprocess import Skip, digest, encode, prepare, split_of
from vtp.data.shards import Member, ShardWriter, read_member, sample_files
from vtp.data.sources import Inputs, Item, Skipped, folder_inputs, pairs_inputs, read_caption_file, shard_inputs
from vtp.log import progress
from vtp.runinfo import RunRecord

SOURCES = ("synthetic", "folder", "pairs", "shards")
log = logging.getLogger("vtp.data.ingest")


@dataclass(frozen=True)
class Options:
    """What a worker needs to turn one input into one sample (picklable: workers are spawned)."""
    resolution: int
    fmt: str
    quality: int
    max_pixels: int
    val_fraction: float
    seed: int


@dataclass
class Prepared:
    ident: str
    key: str
    split: str
    image: bytes
    caption: str
    labels: dict[str, int]


def prepare_item(opts: Options, item: Item) -> Prepared | Skipped:
    try:
        data = read_member(item.image) if isinstance(item.image, Member) else Path(item.image).read_bytes()
        caption = read_caption_file(item.caption_file) if item.caption_file else item.caption
    except OSError as e:
        return Skipped(item.ident, "unreadable", f"{type(e).__name__}: {e.strerror or e}")
    if caption is None:
        return Skipped(item.ident, "missing_caption", "the caption file beside the image is empty")
    try:
        image = prepare(data, opts.resolution, opts.fmt, opts.quality, opts.max_pixels)
    except Skip as s:
        return Skipped(item.ident, s.reason, s.detail)
    except Exception as e:  # noqa: BLE001 - decoders meet hostile files; record it (manifest) and go on
        return Skipped(item.ident, "corrupt", f"{type(e).__name__}: {e}")
    image_id = digest(data)
    # Key = image hash + caption/label hash: exact duplicates share it; the split follows the image alone.
    key = image_id[:16] + digest(caption, json.dumps(item.labels, sort_keys=True))[:8]
    return Prepared(item.ident, key, item.split or split_of(image_id, opts.val_fraction), image, caption,
                    item.labels)


def synthesize(opts: Options, task: tuple[str, int]) -> Prepared:
    split, index = task
    image, caption, labels = synthetic.sample(opts.seed, split, index, opts.resolution)
    return Prepared(f"synthetic seed={opts.seed} {split} {index}", f"{split}_{index:08d}", split,
                    encode(image, opts.fmt, opts.quality), caption, labels)


def list_inputs(source: str, path: Path, cfg: Config) -> Inputs:
    if source == "folder":
        if not path.is_dir():
            raise ValueError(f"--path {path}: expected a folder with one sub-folder per class")
        return folder_inputs(path, cfg.data.caption_template)
    if source == "pairs":
        if not path.is_file():
            raise ValueError(f"--path {path}: expected a .jsonl, .csv, .tsv or .parquet file")
        return pairs_inputs(path)
    return shard_inputs(path)


def _parallel_map(fn: Callable, tasks: list, workers: int) -> Iterator:
    """Ordered results; `workers` spawned processes (spawn: no inherited torch/thread state), or in-process."""
    if workers <= 1:
        yield from map(fn, tasks)
        return
    chunk = max(1, min(64, len(tasks) // (workers * 8)))
    with mp.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(fn, tasks, chunksize=chunk)


def _check_target(final: Path) -> None:
    if final.exists() and not (final / "manifest.json").exists() and any(final.iterdir()):
        raise FileExistsError(f"{final} exists and is not a vtp dataset (no manifest.json); refusing to replace "
                              "it: choose another --name or --out")


def _publish(staging: Path, final: Path) -> None:
    """Swap the complete new dataset into place (two renames; the old one is deleted afterwards)."""
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    staging.rename(final)
    if old.exists():
        shutil.rmtree(old)


def _write_all(results: Iterable[Prepared | Skipped], writers: dict[str, ShardWriter], tally: mf.Tally,
               skipped: list[Skipped], fmt: str, primary: str | None) -> None:
    first: dict[str, str] = {}
    for res in results:
        if isinstance(res, Skipped):
            skipped.append(res)
        elif res.key in first:
            skipped.append(Skipped(res.ident, "duplicate", f"same image bytes, caption and labels as {first[res.key]}"))
        else:
            first[res.key] = res.ident
            writers[res.split].write(res.key, sample_files(res.image, fmt, res.caption, res.labels, primary,
                                                           input=res.ident))
            tally.add(res.split, res.caption, res.labels)


def ingest(source: str, path: Path | None, out: Path, name: str, resolution: int, workers: int, strict: bool,
           cfg: Config) -> dict:
    """Build the dataset `<out>/<name>` and return its manifest (also written as manifest.json).

    For `synthetic`, sizes come from cfg.data.synthetic_train / synthetic_val and the seed from cfg.seed. With
    `strict`, a run that skipped any input is not published: it stays in `<out>/.<name>.partial/`.
    """
    if source not in SOURCES:
        raise ValueError(f"source {source!r}: expected one of {', '.join(SOURCES)}")
    if source != "synthetic" and path is None:
        raise ValueError(f"source {source!r} needs a path")
    if name.startswith(".") or "/" in name or not name:
        raise ValueError(f"name {name!r}: expected a plain folder name")
    d = cfg.data
    opts = Options(resolution, d.image_format, d.jpeg_quality, d.max_image_pixels, d.val_fraction, cfg.seed)
    final, staging = Path(out) / name, Path(out) / f".{name}.partial"
    _check_target(final)
    start = time.perf_counter()
    if source == "synthetic":
        tasks: list = [("train", i) for i in range(d.synthetic_train)] + [("val", i) for i in range(d.synthetic_val)]
        fn: Callable = partial(synthesize, opts)
        inputs = Inputs([], [], synthetic.label_names(), "shape")
    else:
        assert path is not None
        inputs = list_inputs(source, Path(path), cfg)  # a wrong input table fails here, before anything is written
        tasks = sorted(inputs.items, key=lambda it: digest(it.ident))
        fn = partial(prepare_item, opts)
    if staging.exists():  # left by an interrupted run
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    record = RunRecord(staging, "ingest", to_dict(cfg), seed=cfg.seed, source=source,
                       path=str(path) if path else None, resolution=resolution, workers=workers)
    writers = {s: ShardWriter(staging, s, d.shard_size) for s in mf.SPLITS}
    tally, skipped = mf.Tally(inputs.label_sets), list(inputs.skipped)
    try:
        results = progress(_parallel_map(fn, tasks, workers), total=len(tasks), desc=f"ingest {name}")
        _write_all(results, writers, tally, skipped, opts.fmt, inputs.primary_label)
        shards = [info for s in mf.SPLITS for info in writers[s].close()]
    except BaseException as e:
        for w in writers.values():
            w.abort()
        record.finish("interrupted" if isinstance(e, KeyboardInterrupt) else "failed", error=repr(e))
        raise
    seconds = time.perf_counter() - start
    extra = {"seed": cfg.seed, "synthetic_counts": {"train": d.synthetic_train, "val": d.synthetic_val}} \
        if source == "synthetic" else {"val_fraction": d.val_fraction}
    manifest = mf.build(name=name, source=source, source_path=str(path) if path else None, resolution=resolution,
                        image_format=opts.fmt, label_sets=inputs.label_sets, primary_label=inputs.primary_label,
                        tally=tally, shards=shards, skipped=skipped, inputs=len(tasks) + len(inputs.skipped),
                        extra=extra)
    mf.write(manifest, staging)
    _summarise(manifest, final, seconds, workers)
    if not manifest["samples"]:
        record.finish("failed", error="no samples")
        raise ValueError(f"nothing to ingest from {path}: {manifest['inputs']} inputs, all skipped or none found "
                         f"(reasons in {staging}/manifest.json)")
    if strict and skipped:
        record.finish("failed", error=f"--strict: {len(skipped)} inputs skipped")
        log.error("--strict: %d inputs were skipped; the dataset was NOT published. See %s/manifest.json",
                  len(skipped), staging)
        return manifest
    record.finish("ok", samples=manifest["samples"], skipped=len(skipped), seconds=round(seconds, 3),
                  images_per_s=round(len(tasks) / max(seconds, 1e-9), 1))
    _publish(staging, final)
    return manifest


def _summarise(manifest: dict, final: Path, seconds: float, workers: int) -> None:
    n = manifest["inputs"]
    splits = manifest["splits"]
    log.info("ingest %s -> %s: train %d, val %d samples in %d shards; %s", manifest["source"], final,
             splits["train"]["count"], splits["val"]["count"], len(manifest["shards"]), manifest["content_hash"])
    log.info("throughput: %d inputs in %.1f s = %.0f images/s (%d worker%s)", n, seconds, n / max(seconds, 1e-9),
             workers, "" if workers == 1 else "s")
    if manifest["skipped_count"]:
        reasons = ", ".join(f"{r} {c}" for r, c in manifest["skipped_by_reason"].items())
        log.warning("skipped %d of %d inputs: %s", manifest["skipped_count"], n, reasons)
        for s in manifest["skipped"][:10]:
            log.warning("  skipped %s: %s (%s)", s["input"], s["reason"], s["detail"])
        if manifest["skipped_count"] > 10:
            log.warning("  ... %d more listed in manifest.json", manifest["skipped_count"] - 10)
