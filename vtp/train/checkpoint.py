"""Atomic, resumable checkpoints: `checkpoints/step-NNNNNNN/` with safetensors weights per module, the optimizer
state, and `state.json`. A checkpoint is written under a temporary name and renamed, so a kill at any moment
never leaves a broken latest checkpoint; only the last K are kept.

State dicts go through torch.distributed.checkpoint's helpers, so the same code saves plain, DDP and FSDP2
(`fully_shard`) modules as full (unsharded) tensors.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from vtp import dist as vdist
from vtp.fileio import fsync_dir, fsync_tree

STEP_DIR = re.compile(r"^step-(\d{7})$")
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def step_dirs(root: Path) -> list[tuple[int, Path]]:
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()]
    return sorted(found)


def latest(root: Path) -> Path | None:
    dirs = step_dirs(root)
    return dirs[-1][1] if dirs else None


def _contiguous(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage; clone is cheap next to the disk write.
    return {k: v.detach().contiguous().clone() for k, v in sd.items()}


def save(root: Path, step: int, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
         state: dict[str, Any], keep: int) -> Path:
    """Collective (every rank calls it: FSDP gathers full tensors); rank 0 writes.

    Files and folder are fsync'd before the rename that publishes them. A step that already has a checkpoint
    is not written again: training is deterministic, so it would be the same state, and replacing a folder
    would leave a moment with no complete checkpoint of that step.
    """
    final = root / f"step-{step:07d}"
    if final.is_dir():  # every rank sees the same folder
        vdist.barrier()
        return final
    weights = {name: get_model_state_dict(m, options=FULL) for name, m in modules.items()}
    optim = {name: get_optimizer_state_dict(modules[name], opt, options=FULL) for name, opt in optimizers.items()}
    if vdist.get_rank() == 0:
        tmp = root / f".step-{step:07d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, sd in weights.items():
            save_file(_contiguous(sd), tmp / f"{name}.safetensors")
        torch.save(optim, tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2))
        fsync_tree(tmp)
        os.replace(tmp, final)
        fsync_dir(root)
        for _, old in step_dirs(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    vdist.barrier()
    return final


def read_state(path: Path) -> dict | None:
    """A checkpoint's state.json, or None when it cannot be read (then it is not resumed from)."""
    try:
        return json.loads((path / "state.json").read_text())
    except (OSError, ValueError):
        return None


def load(path: Path, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]) -> dict:
    for name, m in modules.items():
        file = path / f"{name}.safetensors"
        if not file.exists():
            raise FileNotFoundError(f"checkpoint {path} has no {file.name}; it holds "
                                    f"{sorted(p.name for p in path.iterdir())}")
        set_model_state_dict(m, load_file(file), options=FULL)
    if optimizers:
        saved = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
        for name, opt in optimizers.items():
            set_optimizer_state_dict(modules[name], opt, saved[name], options=FULL)
    return json.loads((path / "state.json").read_text())


def clean_partial(root: Path) -> None:
    """Remove temporary directories left by a kill during a save."""
    if root.is_dir() and vdist.get_rank() == 0:
        for p in root.glob(".step-*.tmp"):
            shutil.rmtree(p, ignore_errors=True)
