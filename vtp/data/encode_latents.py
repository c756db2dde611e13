"""`vtp latents`: encode the training split with a trained tokenizer into latent shards + statistics.

Rank-sharded under torchrun (rank r encodes image shards r, r + world, ...); each rank writes its own series of
latent shards into a staging folder, the statistics are all-reduced, and rank 0 publishes the folder whole by a
rename, so an interrupted run never leaves a partial latent set under the final name. A sample that fails to
decode is skipped and counted, never fatal.
"""
from __future__ import annotations

import itertools
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from vtp import dist as vdist
from vtp.config import Config, to_dict
from vtp.data.latents import MANIFEST, StatsAccumulator, npy_bytes, sha256_file
from vtp.data.loader import _shards, decode_sample
from vtp.data.shards import ShardWriter
from vtp.fileio import write_json_atomic
from vtp.log import log, progress
from vtp.runinfo import RunRecord


def _samples(urls: list[str], resolution: int, skipped: list[str]):
    import webdataset as wds

    for raw in wds.tarfile_to_samples()(iter({"url": u} for u in urls)):
        try:
            yield decode_sample(raw, resolution)
        except Exception as e:  # noqa: BLE001 - one bad sample is counted, not fatal
            skipped.append(f"{raw.get('__url__')}:{raw.get('__key__')}: {e}")


def run_latents(cfg: Config, tokenizer_dir: Path | None = None) -> dict:
    from vtp.models.external import load_tokenizer, weights_file
    from vtp.train.runtime import autocast

    info = vdist.init_distributed()
    try:
        src = Path(tokenizer_dir or cfg.run_dir / "tokenizer")
        final, staging = cfg.run_dir / "latents", cfg.run_dir / ".latents.partial"
        manifest, urls = _shards(cfg, "train")
        if info.is_main:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        vdist.barrier()
        record = RunRecord(staging, "latents", to_dict(cfg), cfg.seed, tokenizer=str(src)) if info.is_main else None
        tok = load_tokenizer(src).to(info.device).eval()
        lc, skipped = cfg.latents, []
        writer = ShardWriter(staging, f"latents-r{info.rank:02d}", lc.shard_size)
        mine = urls[info.rank::info.world_size]
        stats, count, shape, t0 = None, 0, None, time.perf_counter()
        samples = _samples(mine, cfg.data.resolution, skipped)
        batches = iter(lambda: list(itertools.islice(samples, lc.batch_size)), [])
        for batch in progress(batches, desc=f"latents {cfg.name} (rank {info.rank})"):
            images = torch.from_numpy(np.stack([s["image"] for s in batch])).permute(0, 3, 1, 2)
            images = images.to(info.device).float().div_(127.5).sub_(1.0)
            with torch.no_grad(), autocast(info.device, cfg.train.precision):
                z = tok.encode(images).float()
                z_flip = tok.encode(images.flip(-1)).float() if lc.flip else None
            stats = stats or StatsAccumulator(z.shape[1])
            stats.add(z)
            shape = list(z.shape[1:])
            for i, s in enumerate(batch):
                files = {"latent.npy": npy_bytes(z[i].cpu().numpy()), "txt": s["caption"].encode("utf-8"),
                         "json": json.dumps({"labels": s["labels"]}, sort_keys=True).encode()}
                if z_flip is not None:
                    files["flip.npy"] = npy_bytes(z_flip[i].cpu().numpy())
                writer.write(s["key"], files)
            count += len(batch)
        writer.close()
        totals = vdist.all_reduce_sum(torch.tensor([count, len(skipped)], dtype=torch.float64))
        total, n_skipped = int(totals[0]), int(totals[1])
        if stats is None:
            raise RuntimeError(f"rank {info.rank} encoded no latents from {len(mine)} shards")
        result = stats.result(total)
        seconds = time.perf_counter() - t0
        doc = {"config": cfg.name, "count": total, "shape": shape, "flip": lc.flip,
               "label_sets": manifest["label_sets"], "dataset": str(cfg.shard_dir),
               "tokenizer": {"dir": str(src), "sha256": sha256_file(weights_file(src))},
               "skipped_count": n_skipped, "skipped": skipped[:100], "world_size": info.world_size,
               "seconds": round(seconds, 2), "images_per_s": round(total / max(seconds, 1e-9), 1)}
        vdist.barrier()
        if info.is_main:
            result.save(staging)
            write_json_atomic(staging / MANIFEST, doc)
            record.finish(metrics={"count": total, "skipped_count": n_skipped,
                                   "std_mean": sum(result.std) / len(result.std)})
            shutil.rmtree(final, ignore_errors=True)
            staging.rename(final)
            log.info("latents %s: %d samples %s (%d skipped), channel std %.3f..%.3f, in %s", cfg.name, total,
                     shape, n_skipped, min(result.std), max(result.std), final)
        vdist.barrier()
        return doc
    finally:
        vdist.shutdown()
