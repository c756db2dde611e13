"""Provenance of a run (its run.json) and the commands that reproduce it; the parameter diff of two runs."""
from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd

from app.data import STAGES


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """{'train.lr': 0.001, 'loss.batch_ratio': '[8, 2, 1]', ...}: nested configs as dotted keys."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = str(obj) if isinstance(obj, (list, tuple)) else obj
    return out


def param_diff(a: dict | None, b: dict | None, name_a: str = "a", name_b: str = "b",
               ignore: tuple[str, ...] = ("name",)) -> pd.DataFrame:
    """The parameters that differ between two configurations (a key only one side has shows as <absent>)."""
    fa, fb = flatten(a or {}), flatten(b or {})
    rows = []
    for k in sorted(set(fa) | set(fb)):
        if k in ignore:
            continue
        va, vb = fa.get(k, "<absent>"), fb.get(k, "<absent>")
        if va != vb:
            rows.append({"parameter": k, name_a: str(va), name_b: str(vb)})
    return pd.DataFrame(rows, columns=["parameter", name_a, name_b])


def commands(config: str, folder: str, run: dict | None = None) -> dict[str, str]:
    """How to reproduce the stage: through DVC (lineage, caching) or the bare library command."""
    stage = STAGES[folder]
    out = {"dvc": f"dvc repro {stage}@{config}", "vtp": f"vtp {stage} --config {config}"}
    commit = ((run or {}).get("git") or {}).get("commit")
    if commit:
        out["code"] = f"git checkout {commit}   # the code the run used" + \
            ("  (the workspace was dirty: uncommitted changes are not recorded)" if run["git"].get("dirty") else "")
    return out


def duration(run: dict | None) -> str | None:
    try:
        start, end = dt.datetime.fromisoformat(run["started"]), dt.datetime.fromisoformat(run["ended"])
    except (TypeError, KeyError, ValueError):
        return None
    return str(end - start)


def summary(run: dict | None) -> dict[str, Any]:
    """The fields of run.json worth a glance, flat; the full record is shown and downloadable beside it."""
    run = run or {}
    git, device = run.get("git") or {}, run.get("device") or {}
    return {"stage": run.get("stage"), "status": run.get("status"), "started": run.get("started"),
            "ended": run.get("ended"), "duration": duration(run), "commit": git.get("commit"),
            "dirty": git.get("dirty"), "host": run.get("host"), "python": run.get("python"),
            "device": ", ".join(f"{k}={v}" for k, v in device.items()) or None,
            "world_size": run.get("world_size"), "seed": run.get("seed"), "fingerprint": run.get("fingerprint"),
            "error": run.get("error")}
