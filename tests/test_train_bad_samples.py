"""Pretraining on real shards with bad samples: they are skipped and counted (in the batches, checkpoints and
metrics.json), and a run interrupted after a checkpoint resumes over them to the batches of an uninterrupted run
(the weights of a resumed run are compared in test_train_kill_resume)."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from vtp.data.ingest import ingest
from vtp.data.shards import list_shards
from vtp.train import pretrain
from vtp.train.data import Epochs, stream, webdataset_loader

from train_utils import tiny_config

# 2 shards of 8, 2 bad in each: an epoch (16 // 8 = 2 batches) needs more than a pass holds, so it meets them all.
SETS = ["data.synthetic_train=16", "data.synthetic_val=8", "data.shard_size=8", "data.shuffle_buffer=8",
        "train.checkpoint_every=2", "loss.clip=false", "loss.ssl=false"]  # the data path is under test


class Crash(RuntimeError):
    pass


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    from test_data_loader import png, rewrite_shard  # (a test module: imported here, as isort cannot place it)

    root = tmp_path_factory.mktemp("bad-train")
    cfg = tiny_config(root, "vtp", f"data.root={root}", *SETS)
    ingest("synthetic", None, root, cfg.data.dataset, 32, 1, False, cfg)
    garbled = bytearray(png(32))
    garbled[:64] = bytes(64)  # no PNG signature or header any more
    for tar in list_shards(cfg.shard_dir, "train"):
        rewrite_shard(tar, {1: bytes(garbled), 5: png(16)})
    return root


def run(shards: Path, runs: Path, monkeypatch, resume: bool, crash_at: int | None = None):
    """`run_pretrain` on the webdataset loader, recording (keys, skipped_samples) of the batches it reads."""
    seen: list[tuple[list[str], int]] = []

    def recording(cfg, micro, rank, world) -> Epochs:
        real = webdataset_loader(cfg, micro, rank, world)

        def open_(seed, epoch, skip):
            for i, batch in enumerate(real.open(seed, epoch, skip), epoch * real.batches + skip):
                if i == crash_at:
                    raise Crash(f"interrupted at micro-batch {i}")
                seen.append((batch["key"], batch["skipped_samples"]))
                yield batch

        return Epochs(open_, real.batches)

    monkeypatch.setattr(pretrain, "webdataset_loader", recording)
    cfg = tiny_config(runs, "vtp", f"data.root={shards}", *SETS, steps=4)
    return pretrain.run_pretrain(cfg, resume=resume), seen


def test_bad_samples_are_skipped_counted_and_resumed_over(shards, tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, "vtp", f"data.root={shards}", *SETS, steps=4)
    expected = [(b["key"], b["skipped_samples"]) for b in itertools.islice(  # what an uninterrupted run reads
        stream(webdataset_loader(cfg, 8, 0, 1), cfg.seed, 0), 4)]
    assert [len(keys) for keys, _ in expected] == [8] * 4
    assert not any(k.endswith(("00000001", "00000005", "00000009", "00000013")) for keys, _ in expected for k in keys)
    skipped = sum(n for _, n in expected)
    assert skipped >= 4

    with pytest.raises(Crash):
        run(shards, tmp_path, monkeypatch, resume=False, crash_at=2)  # after the checkpoint of step 2
    assert (tmp_path / "vtp" / "tokenizer" / "checkpoints" / "step-0000002").is_dir()
    metrics, resumed = run(shards, tmp_path, monkeypatch, resume=True)
    assert resumed == expected[2:]
    assert metrics["step"] == 4 and metrics["bad_samples_skipped"] == skipped
