"""Training stream (equal batches per rank, disjoint shards, determinism) and the deterministic eval pass."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from vtp.config import load_config
from vtp.data import synthetic
from vtp.data.ingest import ingest
from vtp.data.loader import eval_loader, read_manifest, train_loader

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


def test_batches_hold_the_stored_samples_in_the_library_convention(root):
    cfg = config(root)
    batch = next(iter(train_loader(cfg, 8)))
    assert batch["image"].shape == (8, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    assert set(batch["labels"]) == set(read_manifest(cfg)["label_sets"])
    assert all(v.dtype == torch.long and v.shape == (8,) for v in batch["labels"].values())
    for i, key in enumerate(batch["key"]):
        split, index = key.split("_")
        image, caption, labels = synthetic.sample(cfg.seed, split, int(index), 32)
        expected = torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1
        assert torch.allclose(batch["image"][i], expected) and batch["caption"][i] == caption
        assert {k: int(v[i]) for k, v in batch["labels"].items()} == labels


def test_every_rank_yields_the_same_number_of_full_batches(root):
    cfg = config(root)
    loaders = [train_loader(cfg, 8, rank=r, world_size=3, batches=9) for r in range(3)]
    for ld in loaders:
        sizes = [len(b["key"]) for b in ld]
        assert sizes == [8] * 9  # 72 samples > the 60 in the split: the stream goes on past an epoch
    endless = train_loader(cfg, 8, rank=2, world_size=3)
    assert len(list(itertools.islice(endless, 40))) == 40


def test_ranks_read_disjoint_shards_within_a_cycle(root):
    cfg = config(root, "data.shuffle_buffer=0")
    firsts = [keys(itertools.islice(train_loader(cfg, 10, rank=r, world_size=2), 3)) for r in range(2)]
    assert not set(firsts[0]) & set(firsts[1])
    assert len(set(firsts[0]) | set(firsts[1])) == 60  # together: the whole split once


def test_stream_is_determined_by_seed_and_shuffled(root):
    cfg = config(root)
    a = keys(itertools.islice(train_loader(cfg, 8, seed=5), 6))
    assert a == keys(itertools.islice(train_loader(cfg, 8, seed=5), 6))
    assert a != keys(itertools.islice(train_loader(cfg, 8, seed=6), 6))
    assert a[:8] != sorted(a[:8])
    other_rank = keys(itertools.islice(train_loader(cfg, 8, rank=1, world_size=2, seed=5), 6))
    assert other_rank != keys(itertools.islice(train_loader(cfg, 8, rank=0, world_size=2, seed=5), 6))


def test_worker_processes_give_a_reproducible_stream(root):
    loader = train_loader(config(root), 8, num_workers=2, batches=6)
    first = keys(loader)
    assert first == keys(loader) and len(first) == 48 and len(set(first)) > 24


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
