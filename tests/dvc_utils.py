"""A tiny DVC project of the repository's own dvc.yaml, shared by the DVC door's tests."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from train_utils import REPO

TINY = {
    "data": {"synthetic_train": 64, "synthetic_val": 32, "shard_size": 32},
    "model": {"size": "tiny", "bottleneck_dim": 8},
    "loss": {"lpips_net": "alex"},
    "train": {"steps": 2, "batch_size": 8, "warmup_steps": 1, "log_every": 1, "checkpoint_every": 2,
              "image_every": 2},
    "eval": {"num_samples": 16, "kid_subset_size": 8, "probe_train_samples": 32, "probe_epochs": 2,
             "batch_size": 16},
    "latents": {"batch_size": 32},
    "dit": {"size": "dit-tiny", "steps": 3, "batch_size": 8, "warmup_steps": 1, "snapshot_every": 2},
    "sample": {"num": 10, "batch_size": 10, "steps": 2},
    "gen_eval": {"num_reference": 16, "batch_size": 16, "kid_subset_size": 5, "convergence_num": 5},
    "judge": {"epochs": 1, "train_samples": 32, "val_samples": 16, "width": 8},
}


def run(args: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "VTP_NO_PROGRESS": "1"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def tiny_project(root: Path) -> None:
    """dvc.yaml, params.yaml with the TINY overrides, and the stages' code dependencies as dvc.yaml lists them
    (the command itself runs the installed package)."""
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    params["configs"]["ae"]["train"] = {"steps": 2}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copytree(REPO / "vtp", root / "vtp", ignore=shutil.ignore_patterns("__pycache__"))
