"""One DVC workspace (a checkout with dvc.yaml): its stages, their targets and outputs, and serialised DVC calls.

DVC locks the repository for the whole of `dvc repro`, so two calls in one workspace would fail with "Unable to
acquire lock": every call here holds a per-workspace file lock (threads of one flow and separate flows alike).
Parallel work runs in separate checkouts that share a DVC remote.
"""
from __future__ import annotations

import configparser
import json
import os
import sys
import threading
from pathlib import Path

import yaml
from filelock import FileLock

from flows import proc
from flows.failures import classify

SHIM = Path(__file__).resolve().parent / "bin"  # `vtp` under torchrun when VTP_NPROC is set (see bin/vtp)
_THREAD_LOCKS: dict[Path, threading.Lock] = {}
_GUARD = threading.Lock()


def dvc_bin() -> str:
    here = Path(sys.executable).parent / "dvc"
    return str(here) if here.exists() else "dvc"


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    path = os.pathsep.join([str(SHIM), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "DVC_NO_ANALYTICS": "1", "VTP_NO_PROGRESS": "1", **(extra or {})}


class Workspace:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        if not (self.root / "dvc.yaml").exists():
            raise FileNotFoundError(f"{self.root}: no dvc.yaml (a workspace is a checkout of the repository)")

    def pipeline(self) -> dict:
        return yaml.safe_load((self.root / "dvc.yaml").read_text())["stages"]

    def configs(self) -> list[str]:
        return list(yaml.safe_load((self.root / "params.yaml").read_text()).get("configs", {}))

    def target(self, stage: str, cfg: str | None) -> str:
        spec = self.pipeline()[stage]
        return f"{stage}@{cfg}" if "foreach" in spec else stage

    def outputs(self, stage: str, cfg: str | None) -> dict[str, list[str]]:
        """The stage's `outs` and `metrics` paths as dvc.yaml declares them, `${key}` filled in."""
        spec = self.pipeline()[stage]
        body = spec.get("do", spec)
        fill = (lambda p: p.replace("${key}", cfg)) if "foreach" in spec else (lambda p: p)

        def names(entries):
            return [fill(next(iter(e)) if isinstance(e, dict) else e) for e in entries or []]
        return {"outs": names(body.get("outs")), "metrics": names(body.get("metrics"))}

    def metrics(self, paths: dict[str, list[str]]) -> dict[str, object]:
        """Scalars of the declared metrics files, or of metrics.json inside an output folder when none is declared."""
        files = paths["metrics"] or [f"{p}/metrics.json" for p in paths["outs"] if (self.root / p).is_dir()]
        found: dict[str, object] = {}
        for rel in files:
            path = self.root / rel
            if path.exists():
                found.update(_scalars(json.loads(path.read_text())))
        return found

    def remote(self) -> str | None:
        """The default DVC remote's URL (.dvc/config, then config.local), read without starting DVC."""
        parser = configparser.ConfigParser()
        parser.read([self.root / ".dvc" / "config", self.root / ".dvc" / "config.local"])
        name = parser.get("core", "remote", fallback=None)
        section = f"'remote \"{name}\"'"
        return parser.get(section, "url", fallback=None) if name and parser.has_section(section) else None

    def dvc(self, args: list[str], timeout_s: float | None = None, grace_s: float = 30.0,
            env: dict[str, str] | None = None, log: Path | None = None) -> proc.Finished:
        """`dvc ARGS` under the workspace lock; a failure raises StageFailed naming its cause."""
        with _GUARD:
            tlock = _THREAD_LOCKS.setdefault(self.root, threading.Lock())
        (self.root / ".dvc" / "tmp").mkdir(parents=True, exist_ok=True)
        with tlock, FileLock(str(self.root / ".dvc" / "tmp" / "flows.lock")):
            done = proc.run([dvc_bin(), *args], self.root, environment(env), timeout_s, grace_s, log)
        if done.returncode != 0 or done.timed_out:
            raise classify(" ".join(["dvc", *args]), done.returncode, done.output, done.timed_out, timeout_s)
        return done


def _scalars(data: dict, prefix: str = "", depth: int = 2) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, (int, float, str, bool)) or value is None:
            out[name] = value
        elif isinstance(value, dict) and depth > 1:
            out.update(_scalars(value, f"{name}.", depth - 1))
    return out
