"""Door 1 end to end: `dvc repro` of the repository's dvc.yaml on tiny parameters ingests, pre-trains and
evaluates every configuration, and `dvc metrics show` compares them."""
from __future__ import annotations

import json
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
    "dit": {"size": "dit-tiny", "steps": 3, "batch_size": 8, "warmup_steps": 1},
    "sample": {"num": 10, "batch_size": 10, "steps": 2},
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


def test_dvc_repro_runs_every_configuration(tmp_path):
    tiny_project(tmp_path)
    dvc = [str(Path(sys.executable).parent / "dvc")]
    run(["git", "init", "-q"], tmp_path)
    run([*dvc, "init", "-q"], tmp_path)
    run(["git", "add", "-A"], tmp_path)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny study"], tmp_path)
    run([*dvc, "repro"], tmp_path)
    for cfg in ("ae", "vtp"):
        assert (tmp_path / "runs" / cfg / "tokenizer" / "model.safetensors").exists()
        summary = json.loads((tmp_path / "runs" / cfg / "eval" / "summary.json").read_text())
        assert {"psnr", "fd_effnetlite0", "probe_bottleneck_top1"} <= summary.keys()
        samples = json.loads((tmp_path / "runs" / cfg / "samples" / "metrics.json").read_text())
        assert samples["count"] == 10 and samples["judge_accuracy"] is not None
    shown = json.loads(run([*dvc, "metrics", "show", "--json"], tmp_path))
    files = next(iter(shown.values()))["data"]
    assert {"runs/ae/eval/summary.json", "runs/vtp/eval/summary.json", "runs/vtp/dit/metrics.json",
            "runs/vtp/samples/metrics.json"} <= files.keys()
    assert "up to date" in run([*dvc, "status"], tmp_path) or "unchanged" in run([*dvc, "repro"], tmp_path)
