"""DiT sample sets: runs/<cfg>/samples*/ with metrics.json (sampler spec, checkpoint, judge) and grids/*.png.

`vtp sample` writes runs/<cfg>/samples/; a sweep over samplers or checkpoints may write sibling folders
(samples-heun, samples-cfg1.5, ...): every folder named samples* is a set.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from app.data import read_json

CLASS_GRID = re.compile(r"class-(\d+)-(.+)\.png$")
ALL = "all classes"


def sample_sets(run_dirs: dict[str, Path]) -> pd.DataFrame:
    """One row per (configuration, sample set): sampler setting, checkpoint, weights, count, judge accuracy."""
    rows = []
    for name, run_dir in run_dirs.items():
        for d in sorted(run_dir.glob("samples*")):
            if not d.is_dir():
                continue
            m, err = read_json(d / "metrics.json")
            m = m if isinstance(m, dict) else {}
            sampler = m.get("sampler") or {}
            rows.append({"config": name, "set": d.name, "dir": str(d), "solver": sampler.get("solver"),
                         "steps": sampler.get("steps"), "shift": sampler.get("shift"),
                         "cfg_scale": sampler.get("cfg_scale"), "cfg_interval": str(sampler.get("cfg_interval")),
                         "checkpoint": m.get("checkpoint") or "final", "weights": m.get("weights"),
                         "count": m.get("count"), "nfe_per_batch": m.get("nfe_per_batch"),
                         "judge_accuracy": m.get("judge_accuracy"), "judge_chance": m.get("judge_chance"),
                         "note": None if err is None else f"metrics.json {err}"})
    return pd.DataFrame(rows)


def grids(set_dir: Path) -> dict[str, Path]:
    """{'all classes': grid.png, 'circle': class-000-circle.png, ...} in class order."""
    g = set_dir / "grids"
    if not g.is_dir():
        return {}
    out: dict[str, Path] = {}
    if (g / "grid.png").is_file():
        out[ALL] = g / "grid.png"
    for idx, label, p in sorted((int(m[1]), m[2], p) for p in g.glob("*.png") if (m := CLASS_GRID.match(p.name))):
        out[label] = p
    return out


def set_metrics(set_dir: Path) -> dict[str, Any]:
    m, _ = read_json(set_dir / "metrics.json")
    return m if isinstance(m, dict) else {}


def per_class_accuracy(set_dir: Path) -> pd.DataFrame:
    m = set_metrics(set_dir)
    acc, classes = m.get("judge_accuracy_per_class"), m.get("classes")
    if not isinstance(acc, list) or not isinstance(classes, list) or len(acc) != len(classes):
        return pd.DataFrame(columns=["class", "judge_accuracy"])
    return pd.DataFrame({"class": classes, "judge_accuracy": acc})
