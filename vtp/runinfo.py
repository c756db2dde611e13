"""`run.json`: the record every stage writes beside its outputs (what ran, on what, from which code)."""
from __future__ import annotations

import datetime as dt
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from vtp.fileio import write_json_atomic

PACKAGES = ("torch", "torchvision", "timm", "open_clip_torch", "webdataset", "lpips", "torch-fidelity", "dvc",
            "prefect", "numpy", "pillow", "vtp")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def git_state(cwd: str | Path = ".") -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_info() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"type": "cpu"}
    if torch.cuda.is_available():
        return {"type": "cuda", "name": torch.cuda.get_device_name(), "count": torch.cuda.device_count()}
    return {"type": "cpu", "threads": torch.get_num_threads()}


class RunRecord:
    """Start it before the work, `finish` it after: writes `<out>/run.json` (atomically) both times."""

    def __init__(self, out_dir: str | Path, stage: str, config: dict | None, seed: int | None = None, **extra):
        self.path = Path(out_dir) / "run.json"
        self.data: dict[str, Any] = {
            "stage": stage, "status": "running", "started": now(), "ended": None, "seed": seed,
            "git": git_state(), "config": config, "packages": package_versions(), "python": platform.python_version(),
            "host": socket.gethostname(), "device": device_info(),
            "world_size": int(os.environ.get("WORLD_SIZE", "1")), **extra,
        }
        self._write()

    def finish(self, status: str = "ok", **extra) -> None:
        self.data.update(status=status, ended=now(), **extra)
        self._write()

    def _write(self) -> None:
        write_json_atomic(self.path, self.data)
