"""Training curves from dvclive: runs/<cfg>/<stage>/dvclive/{metrics.json, plots/metrics/**/*.tsv}.

A curve's name is its path under plots/metrics without `.tsv` (dvclive writes `train/loss` as train/loss.tsv).
A still-running stage's files are read as they are (a half-written last line is dropped, not fatal).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from app.data import read_json

TRAINING = ("tokenizer", "dit")  # the stages that log with dvclive


def live_dir(run_dir: Path, stage: str) -> Path:
    return run_dir / stage / "dvclive"


def metric_files(live: Path) -> dict[str, Path]:
    base = live / "plots" / "metrics"
    if not base.is_dir():
        return {}
    return {p.relative_to(base).with_suffix("").as_posix(): p for p in sorted(base.rglob("*.tsv"))}


def read_curve(path: Path) -> tuple[pd.DataFrame | None, str | None]:
    """(frame with `step` and `value`, None) or (None, why not)."""
    try:
        df = pd.read_csv(path, sep="\t", on_bad_lines="skip")
    except FileNotFoundError:
        return None, f"{path}: missing"
    except (OSError, ValueError, pd.errors.ParserError) as e:
        return None, f"{path}: unreadable ({type(e).__name__}: {e})"
    values = [c for c in df.columns if c not in ("step", "timestamp")]
    if "step" not in df.columns or not values:
        return None, f"{path}: expected a `step` column and a value column, found {list(df.columns)}"
    out = pd.DataFrame({"step": pd.to_numeric(df["step"], errors="coerce"),
                        "value": pd.to_numeric(df[values[-1]], errors="coerce")}).dropna()
    return out, None


def curves(run_dirs: dict[str, Path], stage: str, metric: str) -> tuple[pd.DataFrame, list[str]]:
    """Long frame [config, step, value] of one metric over several runs, and a note per run that has none."""
    frames, notes = [], []
    for name, run_dir in run_dirs.items():
        path = metric_files(live_dir(run_dir, stage)).get(metric)
        if path is None:
            notes.append(f"{name}: no {stage} curve `{metric}` (dvclive folder missing or metric not logged)")
            continue
        df, err = read_curve(path)
        if err:
            notes.append(f"{name}: {err}")
        elif df is not None:
            frames.append(df.assign(config=name))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["step", "value", "config"])
    return frame[["config", "step", "value"]], notes


def available(run_dirs: dict[str, Path], stage: str) -> list[str]:
    names: set[str] = set()
    for run_dir in run_dirs.values():
        names.update(metric_files(live_dir(run_dir, stage)))
    return sorted(names)


def live_summary(run_dir: Path, stage: str) -> dict | None:
    data, _ = read_json(live_dir(run_dir, stage) / "metrics.json")
    return data if isinstance(data, dict) else None
