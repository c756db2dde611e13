"""Kill a real training process mid-run (stage 1 `vtp pretrain`, stage 2 `vtp decoder-gan`), run the same command
again: the final weights are bitwise equal to an uninterrupted run (CPU, deterministic settings, real WebDataset
shards)."""
from __future__ import annotations

import os
import shutil
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
from vtp.train.decoder_gan import run_decoder_gan
from vtp.train.pretrain import run_pretrain

from train_utils import REPO, TINY

STEPS = 10
SETS = [*TINY, f"train.steps={STEPS}", "train.checkpoint_every=2", "train.keep_checkpoints=2",
        "data.synthetic_train=96", "data.synthetic_val=16", "data.shard_size=32", "data.shuffle_buffer=16",
        f"gan.steps={STEPS}", "gan.warmup_steps=1", "gan.start_step=1", "gan.adv_warmup_steps=2", "gan.disc_blocks=2"]
STAGES = {"pretrain": ("tokenizer", run_pretrain), "decoder-gan": ("tokenizer-gan", run_decoder_gan)}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kill")
    cfg = load_config("vtp", [*SETS, f"data.root={root / 'shards'}"], REPO / "params.yaml")
    ingest(source="synthetic", path=None, out=Path(cfg.data.root), name=cfg.data.dataset,
           resolution=cfg.data.resolution, workers=1, strict=True, cfg=cfg)
    return root / "shards"


def sets(shards: Path, runs: Path) -> list[str]:
    return [*SETS, f"data.root={shards}", f"runs_root={runs}"]


@pytest.fixture(scope="module")
def stage_one(shards, tmp_path_factory) -> Path:
    """A short stage-1 run whose tokenizer every stage-2 run starts from."""
    runs = tmp_path_factory.mktemp("stage1")
    run_pretrain(load_config("vtp", [*sets(shards, runs), "train.steps=2", "train.warmup_steps=1"],
                         REPO / "params.yaml"), resume=False)
    return runs / "vtp" / "tokenizer"


def runs_dir(base: Path, stage: str, stage_one: Path) -> Path:
    if stage == "decoder-gan":
        target = base / "vtp" / "tokenizer"
        target.mkdir(parents=True)
        for name in ("model.safetensors", "config.json"):
            shutil.copy(stage_one / name, target / name)
    return base


def launch(stage: str, shards: Path, runs: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "vtp.cli", stage, "--config", "vtp", "--params", str(REPO / "params.yaml")]
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


def final_weights(runs: Path, stage: str) -> dict[str, torch.Tensor]:
    return load_file(runs / "vtp" / STAGES[stage][0] / "model.safetensors")


@pytest.fixture(scope="module")
def uninterrupted(shards, stage_one, tmp_path_factory):
    cache = {}

    def get(stage: str) -> dict[str, torch.Tensor]:
        if stage not in cache:
            runs = runs_dir(tmp_path_factory.mktemp(f"straight-{stage}"), stage, stage_one)
            STAGES[stage][1](load_config("vtp", sets(shards, runs), REPO / "params.yaml"), resume=False)
            cache[stage] = final_weights(runs, stage)
        return cache[stage]

    return get


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_killed_run_resumes_bitwise_equal(shards, stage_one, uninterrupted, tmp_path, sig, stage):
    runs = runs_dir(tmp_path / "runs", stage, stage_one)
    ckpts = runs / "vtp" / STAGES[stage][0] / "checkpoints"
    proc = launch(stage, shards, runs)
    wait_for_checkpoint(proc, ckpts, 4)
    proc.send_signal(sig)
    output = proc.communicate(timeout=120)[0]
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:  # graceful: checkpoint at the current step, say how to resume, exit non-zero
        assert proc.returncode == 1 and "re-run the same command to resume" in output, output
    steps_done = max(int(p.name.split("-")[1]) for p in ckpts.glob("step-*"))
    assert 4 <= steps_done < STEPS, "the kill must land mid-run"
    resumed = launch(stage, shards, runs)
    output = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, output
    assert "resumed from" in output and f"(step {steps_done})" in output
    assert_bitwise_equal(uninterrupted(stage), final_weights(runs, stage))
