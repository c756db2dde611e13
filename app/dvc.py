"""DVC as a source: `dvc status` (which runs are stale against their code and parameters) and `dvc exp show`
(experiments as rows). Read-only calls through the dvc command; no dvc, no repository or no experiments is an
answer with a reason, never an exception.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd

REVISION_FILES = ("dvc.lock", "dvc.yaml", "params.yaml", ".git/HEAD", ".git/packed-refs", ".git/refs/exps")


def dvc_command() -> str | None:
    beside = Path(sys.executable).with_name("dvc")  # the venv's dvc even when .venv/bin is not on PATH
    return str(beside) if beside.exists() else shutil.which("dvc")


def revision(project: Path) -> tuple:
    """The cache key of everything dvc answers from: the workspace's lock/params and the git refs."""
    out = []
    for name in REVISION_FILES:
        try:
            out.append((name, (project / name).stat().st_mtime_ns))
        except OSError:
            out.append((name, None))
    try:
        out.append(("HEAD", (project / ".git" / "HEAD").read_text().strip()))
    except OSError:
        pass
    return (str(project), tuple(out))


def run_dvc(args: list[str], project: Path, timeout: float = 120) -> tuple[Any, str | None]:
    """(parsed JSON, None) or (None, why not)."""
    exe = dvc_command()
    if exe is None:
        return None, "dvc is not installed"
    if not (project / ".dvc").is_dir():
        return None, f"{project.resolve()} is not a DVC repository (no .dvc/)"
    try:
        out = subprocess.run([exe, *args], cwd=project, capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"dvc {' '.join(args)}: {type(e).__name__}: {e}"
    if out.returncode != 0:
        return None, f"dvc {' '.join(args)} failed: {(out.stderr or out.stdout).strip()[-500:]}"
    try:
        return json.loads(out.stdout or "null"), None
    except ValueError as e:
        return None, f"dvc {' '.join(args)}: unreadable output ({e})"


def describe_change(changes: list) -> str:
    """dvc status's list for one stage -> 'changed deps: vtp/train, params.yaml (configs.ae)'."""
    parts = []
    for item in changes:
        if not isinstance(item, dict):
            parts.append(str(item))
            continue
        for what, files in item.items():
            if isinstance(files, dict):
                names = [f"{k} ({', '.join(v)})" if isinstance(v, dict) else k for k, v in files.items()]
                parts.append(f"{what}: {', '.join(names)}")
            else:
                parts.append(f"{what}: {files}")
    return "; ".join(parts)


def stale_by_config(status: dict | None, configs: list[str]) -> dict[str, str]:
    """{config: 'pretrain@vtp: changed deps: ...'} for each configuration with a stage dvc would re-run. A stage
    without `@cfg` (ingest, judge) is shared: it makes every configuration stale."""
    out: dict[str, list[str]] = {c: [] for c in configs}
    for stage, changes in (status or {}).items():
        line = f"{stage}: {describe_change(changes if isinstance(changes, list) else [changes])}"
        name, _, cfg = stage.partition("@")
        for c in ([cfg] if cfg else configs):
            if c in out:
                out[c].append(line)
    return {c: " | ".join(v) for c, v in out.items() if v}


def _flatten(prefix: str, obj: Any, out: dict[str, Any]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(obj, (int, float, str, bool)) or obj is None:
        out[prefix] = obj


def _short(rev: str | None) -> str:
    return rev[:7] if rev and len(rev) == 40 else (rev or "")


def _row(entry: dict, kind: str, baseline: str | None) -> dict[str, Any]:
    data = entry.get("data") or {}
    row: dict[str, Any] = {"rev": _short(entry.get("rev")), "name": entry.get("name"), "kind": kind,
                           "baseline": baseline, "timestamp": data.get("timestamp"),
                           "error": (entry.get("error") or {}).get("msg") if entry.get("error") else None}
    for section in ("params", "metrics"):
        for path, doc in (data.get(section) or {}).items():
            flat: dict[str, Any] = {}
            _flatten("", (doc or {}).get("data"), flat)
            row.update({f"{section}:{path}:{k}": v for k, v in flat.items()})
    return row


def experiments_frame(shown: list | None) -> pd.DataFrame:
    """`dvc exp show --json` -> one row per workspace, baseline commit and experiment; columns
    `params:<file>:<key>` and `metrics:<file>:<key>` as the files name them."""
    rows = []
    for top in shown or []:
        kind = "workspace" if top.get("rev") == "workspace" else "baseline"
        rows.append(_row(top, kind, None))
        for exp in top.get("experiments") or []:
            for rev in exp.get("revs") or []:
                rows.append(_row({**rev, "name": rev.get("name") or exp.get("name")}, "experiment",
                                 _short(top.get("rev"))))
    return pd.DataFrame(rows)


def varying(frame: pd.DataFrame, prefix: str) -> list[str]:
    """Columns under `prefix` whose values differ between rows: what distinguishes the experiments."""
    cols = [c for c in frame.columns if c.startswith(prefix)]
    return [c for c in cols if frame[c].astype(str).nunique(dropna=False) > 1]
