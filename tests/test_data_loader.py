"""Training stream (fixed epochs, equal batches per rank, disjoint slots, determinism, exact resume, bad samples
skipped and counted) and the deterministic eval pass."""
from __future__ import annotations

import io
import itertools
import os
import shutil
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vtp.config import load_config
from vtp.data import loader as loader_mod
from vtp.data import synthetic
from vtp.data.ingest import ingest
from vtp.data.loader import eval_loader, read_manifest, train_loader
from vtp.train.data import stream, webdataset_loader

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def config(root: Path, *more: str):
    return load_config(overrides=[f"data.root={root}", "data.resolution=32", "aug.global_crop_size=32",
                                  "aug.local_crop_size=16", "data.synthetic_train=60", "data.synthetic_val=10",
                                  "data.shard_size=10", "data.shuffle_buffer=16", *more], params=PARAMS)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    cfg = config(root)
    ingest("synthetic", None, root, cfg.data.dataset, 32, 1, False, cfg)
    return root


def keys(batches) -> list[str]:
    return [k for b in batches for k in b["key"]]


# -- bad samples, shared with test_train_bad_samples ----------------------------------------------------------------
def png(size: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def png_with_broken_pixels(size: int) -> bytes:
    """A PNG whose header, size and chunk CRCs are right but whose pixel data is not zlib: only decoding finds it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", b"not zlib data at all" * 8) + chunk(b"IEND", b""))


def rewrite_shard(path: Path, images: dict[int, bytes | None]) -> list[str]:
    """Replace the image of the i-th sample of a shard (None: drop it); returns the keys changed."""
    with tarfile.open(path) as tf:
        members = [(m, tf.extractfile(m).read()) for m in tf if m.isfile()]
    order = list(dict.fromkeys(m.name.split(".", 1)[0] for m, _ in members))
    changed = {order[i]: data for i, data in images.items()}
    tmp = path.with_name(path.name + ".new")
    with tarfile.open(tmp, "w") as out:
        for m, data in members:
            key, ext = m.name.split(".", 1)
            if key in changed and ext == "png":
                if changed[key] is None:
                    continue
                data = changed[key]
            m.size = len(data)
            out.addfile(m, io.BytesIO(data))
    os.replace(tmp, path)
    return list(changed)


@pytest.fixture(scope="module")
def bad_root(root, tmp_path_factory) -> tuple[Path, list[str]]:
    """The dataset with three bad samples in shard 0: garbled bytes, a 16 px image, pixels that do not decode,
    and one with its image missing in shard 1."""
    bad = tmp_path_factory.mktemp("bad") / "shards"
    shutil.copytree(root, bad)
    name = config(root).data.dataset
    first = bad / name / "train-000000.tar"
    garbled = bytearray(png(32))
    garbled[:64] = bytes(64)
    broken = rewrite_shard(first, {1: bytes(garbled), 4: png(16), 7: png_with_broken_pixels(32)})
    broken += rewrite_shard(bad / name / "train-000001.tar", {2: None})
    return bad, broken


# -- the training stream --------------------------------------------------------------------------------------------
def test_batches_hold_the_stored_samples_in_the_library_convention(root):
    cfg = config(root)
    batch = next(iter(train_loader(cfg, 8)))
    assert batch["image"].shape == (8, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    assert set(batch["labels"]) == set(read_manifest(cfg)["label_sets"])
    assert all(v.dtype == torch.long and v.shape == (8,) for v in batch["labels"].values())
    assert batch["skipped_samples"] == 0
    for i, key in enumerate(batch["key"]):
        split, index = key.split("_")
        image, caption, labels = synthetic.sample(cfg.seed, split, int(index), 32)
        expected = torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1
        assert torch.allclose(batch["image"][i], expected) and batch["caption"][i] == caption
        assert {k: int(v[i]) for k, v in batch["labels"].items()} == labels


@pytest.mark.parametrize("workers", [0, 2])
def test_every_rank_yields_the_same_fixed_number_of_full_batches_per_epoch(root, workers):
    cfg = config(root)
    loaders = [train_loader(cfg, 8, rank=r, world_size=3, num_workers=workers) for r in range(3)]
    assert {ld.epoch_batches for ld in loaders} == {60 // (3 * 8)}
    for ld in loaders:
        assert [len(b["key"]) for b in ld.epoch(1)] == [8] * ld.epoch_batches
    sizes = [len(b["key"]) for b in train_loader(cfg, 8, rank=2, world_size=3, batches=9)]
    assert sizes == [8] * 9  # iter() runs on through the epochs


def test_ranks_and_workers_read_disjoint_samples_within_an_epoch(root):
    cfg = config(root)  # 6 shards of 10 = 3 ranks x 2 workers x 2 batches of 5: the whole split, once
    for epoch in (0, 1):
        per_rank = [keys(train_loader(cfg, 5, rank=r, world_size=3, num_workers=2).epoch(epoch)) for r in range(3)]
        assert [len(k) for k in per_rank] == [20] * 3
        assert len(set().union(*per_rank)) == 60


def test_stream_is_determined_by_seed_and_reshuffled_every_epoch(root):
    cfg = config(root)
    ld = train_loader(cfg, 10, seed=5)
    assert ld.epoch_batches == 6
    first, second = keys(ld.epoch(0)), keys(ld.epoch(1))
    assert first == keys(train_loader(cfg, 10, seed=5).epoch(0))
    assert first != keys(train_loader(cfg, 10, seed=6).epoch(0))
    assert sorted(first) == sorted(second) and first != second  # one pass each, in another order
    assert first[:10] != sorted(first[:10])
    ranks = [keys(train_loader(cfg, 8, rank=r, world_size=2, seed=5).epoch(0)) for r in range(2)]
    assert not set(ranks[0]) & set(ranks[1])


def test_worker_processes_give_a_reproducible_stream(root):
    loader = train_loader(config(root), 8, num_workers=2, batches=10)
    first = keys(loader)
    assert first == keys(loader) and len(first) == 80 and len(set(first)) > 40


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_resumed_anywhere_equals_the_uninterrupted_stream(root, workers):
    cfg = config(root, f"data.loader_workers={workers}")
    loader = webdataset_loader(cfg, 8, 1, 2)  # rank 1 of 2: 3 batches per epoch
    assert loader.batches == 3
    straight = list(itertools.islice(stream(loader, 7, 0), 8))
    assert keys(itertools.islice(loader(7), 8)) == keys(straight)  # called with a seed: the whole stream
    for start in (1, 2, 3, 5):  # inside epoch 0, at the boundary, inside epoch 1
        resumed = list(itertools.islice(stream(loader, 7, start), 8 - start))
        assert keys(resumed) == keys(straight[start:])
        assert all(torch.equal(a["image"], b["image"]) for a, b in zip(resumed, straight[start:]))


def test_bad_samples_are_skipped_counted_and_resumed_over(bad_root, caplog, monkeypatch):
    monkeypatch.setattr(loader_mod._Skips, "logged", 0)  # the warnings are rate-limited per process
    root, broken = bad_root
    cfg = config(root)
    ld = train_loader(cfg, 10)  # 6 batches of 10 need more than one pass holds: every bad sample is met
    with caplog.at_level("WARNING", logger="vtp.data.loader"):
        epoch = list(ld.epoch(0))
    assert [len(b["key"]) for b in epoch] == [10] * 6
    assert not set(broken) & set(keys(epoch))
    assert sum(b["skipped_samples"] for b in epoch) >= 4
    logged = caplog.text
    assert "skipped bad sample" in logged and all(k in logged for k in broken)
    assert "train-000000.tar:" + broken[1] in logged and "image is 16x16, expected 32x32" in logged
    loader = webdataset_loader(cfg, 10, 0, 1)
    straight = list(itertools.islice(stream(loader, 3, 0), 9))
    for start in (2, 6, 7):
        resumed = list(itertools.islice(stream(loader, 3, start), 9 - start))
        assert keys(resumed) == keys(straight[start:])
        assert [b["skipped_samples"] for b in resumed] == [b["skipped_samples"] for b in straight[start:]]


def test_eval_pass_skips_and_counts_bad_samples(bad_root):
    root, broken = bad_root
    loader = eval_loader(config(root), "train", batch_size=16)
    first = list(loader)
    assert len(keys(first)) == 56 and not set(broken) & set(keys(first))
    assert sum(b["skipped_samples"] for b in first) == loader.skipped_samples == 4
    assert keys(first) == keys(loader)


# -- the eval pass and errors ---------------------------------------------------------------------------------------
def test_eval_loader_is_finite_and_the_same_every_time(root):
    cfg = config(root)
    loader = eval_loader(cfg, "val", batch_size=4)
    assert len(loader) == 3
    first = list(loader)
    assert [len(b["key"]) for b in first] == [4, 4, 2]
    assert keys(first) == [f"val_{i:08d}" for i in range(10)] == keys(loader)
    assert keys(eval_loader(cfg, "val", batch_size=3, num_samples=5)) == keys(first)[:5]
    assert len(keys(eval_loader(cfg, "train", batch_size=64))) == 60
    assert len(keys(eval_loader(cfg, "val", batch_size=64, num_samples=100))) == 10
    with pytest.raises(ValueError, match="split 'test'"):
        eval_loader(cfg, "test")


def test_missing_or_mismatched_shards_say_what_to_do(root, tmp_path):
    with pytest.raises(FileNotFoundError, match="vtp ingest --source synthetic"):
        train_loader(config(tmp_path), 8)
    with pytest.raises(FileNotFoundError, match="vtp ingest"):
        eval_loader(config(tmp_path))
    with pytest.raises(ValueError, match="holds 32 px images but data.resolution = 64"):
        train_loader(config(root, "data.resolution=64", "aug.global_crop_size=64"), 8)
    with pytest.raises(ValueError, match="rank 2: expected 0 <= rank < world_size = 2"):
        train_loader(config(root), 8, rank=2, world_size=2)
