"""Scaling data: the overview's points (metric against pretraining FLOPs, parameters or E) and the report's
power-law fits from reports/*.json when a report exists.

`vtp report` is not built yet, so the fit format is read tolerantly: a fit is any JSON object (at any depth) with
a `metric` and an exponent (`exponent`, `slope`, `alpha` or `b`); its other fields (prefactor, x axis, family,
intervals such as `exponent_ci: [lo, hi]`) are shown as written. A fit with a prefactor and an `x` axis is drawn.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from app.data import read_json

AXES = {"flops": "pretraining FLOPs (model_total_flops)", "parameters": "tokenizer parameters",
        "E": "bottleneck size E = tokens x dim"}
EXPONENT_KEYS = ("exponent", "slope", "alpha", "b")
PREFACTOR_KEYS = ("prefactor", "coef", "coefficient", "a", "scale")


def read_reports(root: Path) -> list[tuple[Path, Any, str | None]]:
    """Every reports/*.json as (path, data, error); empty when the folder does not exist."""
    if not root.is_dir():
        return []
    return [(p, *read_json(p)) for p in sorted(root.glob("*.json"))]


def _walk_fits(obj: Any, where: str, out: list[dict]) -> None:
    if isinstance(obj, dict):
        if "metric" in obj and any(k in obj for k in EXPONENT_KEYS):
            out.append({"at": where, **obj})
            return
        for k, v in obj.items():
            _walk_fits(v, f"{where}.{k}" if where else str(k), out)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _walk_fits(v, f"{where}[{i}]", out)


def fits(doc: Any) -> pd.DataFrame:
    out: list[dict] = []
    _walk_fits(doc, "", out)
    rows = [{k: (", ".join(map(str, v)) if isinstance(v, list) else v) for k, v in f.items()} for f in out]
    return pd.DataFrame(rows)


def _first(fit: dict, keys) -> float | None:
    for k in keys:
        v = fit.get(k)
        if isinstance(v, (int, float)) and np.isfinite(v):
            return float(v)
    return None


def fit_curve(fit: dict, xs: np.ndarray) -> pd.DataFrame | None:
    """y = prefactor * x ** exponent over xs, or None when the fit lacks either number."""
    a, b = _first(fit, PREFACTOR_KEYS), _first(fit, EXPONENT_KEYS)
    if a is None or b is None or len(xs) == 0:
        return None
    grid = np.geomspace(max(float(np.min(xs)), 1e-300), float(np.max(xs)), 50)
    return pd.DataFrame({"x": grid, "y": a * grid ** b})


def scaling_points(overview: pd.DataFrame, metric: str, x: str) -> tuple[pd.DataFrame, list[str]]:
    """Points [config, kind, x, metric] that a log-log plot can show, and why each other configuration cannot."""
    notes, rows = [], []
    for _, r in overview.iterrows():
        xv, yv = r.get(x), r.get(metric)
        if xv is None or pd.isna(xv) or xv <= 0:
            notes.append(f"{r['config']}: no {x} ({r.get('status')})")
        elif yv is None or pd.isna(yv) or yv <= 0:
            notes.append(f"{r['config']}: no positive {metric} ({r.get('status')})")
        else:
            rows.append({"config": r["config"], "kind": r.get("kind") or "?", x: float(xv), metric: float(yv)})
    return pd.DataFrame(rows, columns=["config", "kind", x, metric]), notes


def loglog_slope(points: pd.DataFrame, x: str, metric: str) -> float | None:
    """A descriptive least-squares slope in log-log space (not the report's fit, which carries intervals)."""
    if len(points) < 2 or points[x].nunique() < 2:
        return None
    return float(np.polyfit(np.log(points[x]), np.log(points[metric]), 1)[0])
