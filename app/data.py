"""Runs on disk -> what the explorer shows: one `Run` per configuration, each stage's state, the overview table.

A configuration is a folder runs/<cfg>/ with one sub-folder per stage (tokenizer, eval, latents, dit, samples);
every stage writes `run.json` (vtp.runinfo: status "running" while it works, then "ok", "failed" or "interrupted"
with an `error`) beside its outputs. Nothing here raises on a bad run: a missing, partial, still-running or
corrupt stage becomes a state with a sentence saying what is wrong. Metric names stay as the files write them.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from vtp.report.collect import read_json  # one reader of result files for the report and the app

# run sub-folder -> the stage that writes it (= the `vtp` subcommand = the DVC stage `<name>@<cfg>`)
STAGES = {"tokenizer": "pretrain", "eval": "evaluate", "latents": "latents", "dit": "train-dit", "samples": "sample"}
# what a finished stage must have left behind besides run.json
EXPECTED = {"tokenizer": ("metrics.json", "model.safetensors", "config.json"), "eval": ("metrics.json",),
            "latents": ("stats.json", "manifest.json"), "dit": ("metrics.json", "model.safetensors"),
            "samples": ("metrics.json", "grids")}
SHARED = {"judge"}  # runs/judge is one classifier for all configurations, not a configuration
# overall state of a configuration: the worst of its stages, in this order
SEVERITY = ("corrupt", "failed", "interrupted", "running", "partial", "finished", "not run")
STAMP_FILES = ("run.json", "metrics.json", "config.json", "stats.json", "dvclive/metrics.json")


def runs_root() -> Path:
    return Path(os.environ.get("VTP_RUNS_ROOT", "runs"))


def reports_root() -> Path:
    return Path(os.environ.get("VTP_REPORTS_ROOT", "reports"))


def project_root() -> Path:
    """Where params.yaml, dvc.yaml and .git live (dvc and data paths in run.json are relative to it)."""
    return Path(os.environ.get("VTP_PROJECT_ROOT", "."))


@dataclass
class StageState:
    folder: str
    state: str  # finished | running | failed | interrupted | partial | corrupt | not run
    detail: str = ""
    run: dict | None = None  # run.json
    metrics: dict | None = None  # metrics.json
    step: int | None = None  # live step of a training stage
    total: int | None = None


def _total_steps(folder: str, config: dict | None) -> int | None:
    section = {"tokenizer": "train", "dit": "dit"}.get(folder)
    try:
        return int(config[section]["steps"]) if section else None
    except (TypeError, KeyError, ValueError):
        return None


def _ago(path: Path) -> str:
    try:
        minutes = (time.time() - path.stat().st_mtime) / 60
    except OSError:
        return ""
    return f", last update {minutes:.0f} min ago" if minutes >= 1 else ", updated just now"


def stage_state(run_dir: Path, folder: str) -> StageState:
    d = run_dir / folder
    if not d.is_dir():
        return StageState(folder, "not run", "folder missing")
    run, err = read_json(d / "run.json")
    if err == "missing":
        return StageState(folder, "partial", "no run.json (outputs without a record)") if any(d.iterdir()) \
            else StageState(folder, "not run", "empty folder")
    if err or not isinstance(run, dict):
        return StageState(folder, "corrupt", f"run.json {err or 'is not an object'}")
    metrics, merr = read_json(d / "metrics.json")
    metrics = metrics if isinstance(metrics, dict) else None
    status = run.get("status")
    if status == "running":
        live, _ = read_json(d / "dvclive" / "metrics.json")
        step = live.get("step") if isinstance(live, dict) else None
        total = _total_steps(folder, run.get("config"))
        where = f"step {step}/{total or '?'}" if step is not None else "no step logged yet"
        return StageState(folder, "running", where + _ago(d / "dvclive" / "metrics.json" if step is not None
                                                         else d / "run.json"), run, metrics, step, total)
    if status in ("failed", "interrupted"):
        error = run.get("error") or "no error recorded"
        step = run.get("step")
        return StageState(folder, status, f"{error}" + (f" (at step {step})" if step is not None else ""), run,
                          metrics, step)
    if status != "ok":
        return StageState(folder, "corrupt", f"run.json status {status!r} is not one vtp writes", run, metrics)
    if merr and merr != "missing":
        return StageState(folder, "corrupt", f"metrics.json {merr}", run)
    missing = [f for f in EXPECTED[folder] if not (d / f).exists()]
    if missing:
        return StageState(folder, "partial", f"finished but missing {', '.join(missing)}", run, metrics)
    return StageState(folder, "finished", f"ended {run.get('ended')}", run, metrics)


@dataclass
class Run:
    name: str
    dir: Path
    stages: dict[str, StageState] = field(default_factory=dict)

    @property
    def config(self) -> dict | None:
        """The resolved configuration the first recorded stage ran with."""
        for s in self.stages.values():
            if s.run and isinstance(s.run.get("config"), dict):
                return s.run["config"]
        return None

    @property
    def state(self) -> str:
        states = [s.state for s in self.stages.values()]
        if all(s == "not run" for s in states):
            return "not run"
        if all(s == "finished" for s in states):
            return "finished"
        worst = min(states, key=SEVERITY.index)
        return "partial" if worst in ("not run", "finished") else worst

    def problems(self) -> str:
        """What is wrong or missing, e.g. 'tokenizer: failed (NonFiniteLoss ...); not run yet: eval, dit'."""
        bad = [f"{f}: {s.state} ({s.detail})" for f, s in self.stages.items() if s.state not in ("finished", "not run")]
        todo = [f for f, s in self.stages.items() if s.state == "not run"]
        return "; ".join(bad + ([f"not run yet: {', '.join(todo)}"] if todo else []))


def config_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name not in SHARED and not p.name.startswith(".")
                  and not (p / "run.json").exists())


def load_run(run_dir: Path) -> Run:
    return Run(run_dir.name, run_dir, {f: stage_state(run_dir, f) for f in STAGES})


def load_runs(root: Path | None = None) -> dict[str, Run]:
    return {p.name: load_run(p) for p in config_dirs(root or runs_root())}


def signature(root: Path | None = None, extra: tuple[Path, ...] = ()) -> tuple:
    """Modification times of every file the overview reads: the cache key that changes when a run writes."""
    root = root or runs_root()
    out = []
    for d in config_dirs(root):
        for f in STAGES:
            for name in STAMP_FILES:
                try:
                    st = (d / f / name).stat()
                except OSError:
                    continue
                out.append((f"{d.name}/{f}/{name}", st.st_mtime_ns, st.st_size))
    for p in extra:
        try:
            out.append((str(p), p.stat().st_mtime_ns))
        except OSError:
            pass
    return (str(root), tuple(out))
