"""Kill a real `vtp pretrain` process mid-run, run the same command again: the final weights are bitwise equal
to an uninterrupted run (CPU, deterministic settings, real WebDataset shards)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vtp.config import load_config
from vtp.data.ingest import ingest
from vtp.train.pretrain import run_pretrain
from train_utils import REPO, TINY

STEPS = 10
SETS = [*TINY, f"train.steps={STEPS}", "train.checkpoint_every=2", "train.keep_checkpoints=2",
        "data.synthetic_train=96", "data.synthetic_val=16", "data.shard_size=32", "data.shuffle_buffer=16"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kill")
    cfg = load_config("vtp", [*SETS, f"data.root={root / 'shards'}"], REPO / "params.yaml")
    ingest(source="synthetic", path=None, out=Path(cfg.data.root), name=cfg.data.dataset,
           resolution=cfg.data.resolution, workers=1, strict=True, cfg=cfg)
    return root / "shards"


def sets(shards: Path, runs: Path) -> list[str]:
    return [*SETS, f"data.root={shards}", f"runs_root={runs}"]


def launch(shards: Path, runs: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "vtp.cli", "pretrain", "--config", "vtp", "--params", str(REPO / "params.yaml")]
    for s in sets(shards, runs):
        args += ["--set", s]
    env = {**os.environ, "VTP_NO_PROGRESS": "1", "OMP_NUM_THREADS": "2"}
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_checkpoint(proc: subprocess.Popen, ckpts: Path, step: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not (ckpts / f"step-{step:07d}").exists():
        if proc.poll() is not None:
            raise AssertionError(f"training exited early:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("no checkpoint appeared in time")
        time.sleep(0.02)


def final_weights(runs: Path) -> dict[str, torch.Tensor]:
    return load_file(runs / "vtp" / "tokenizer" / "model.safetensors")


@pytest.fixture(scope="module")
def uninterrupted(shards, tmp_path_factory) -> dict[str, torch.Tensor]:
    runs = tmp_path_factory.mktemp("straight")
    run_pretrain(load_config("vtp", sets(shards, runs), REPO / "params.yaml"), resume=False)
    return final_weights(runs)


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_killed_run_resumes_bitwise_equal(shards, uninterrupted, tmp_path, sig):
    runs = tmp_path / "runs"
    ckpts = runs / "vtp" / "tokenizer" / "checkpoints"
    proc = launch(shards, runs)
    wait_for_checkpoint(proc, ckpts, 4)
    proc.send_signal(sig)
    output = proc.communicate(timeout=120)[0]
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:  # graceful: checkpoint at the current step, say how to resume, exit non-zero
        assert proc.returncode == 1 and "re-run the same command to resume" in output, output
    steps_done = max(int(p.name.split("-")[1]) for p in ckpts.glob("step-*"))
    assert 4 <= steps_done < STEPS, "the kill must land mid-run"
    resumed = launch(shards, runs)
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output
    assert f"resumed from" in output and f"(step {steps_done})" in output
    assert_bitwise_equal(uninterrupted, final_weights(runs))
