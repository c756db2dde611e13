"""The runs overview: one row per configuration with its objectives, size, E, FLOPs, state and key metrics."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from app.data import STAGES, Run, load_runs, project_root, read_json
from vtp.report import collect
from vtp.report.collect import kind, objectives  # the report's families, so page and report agree


def bottleneck(run: Run) -> dict[str, Any]:
    """E = tokens x channels (ViTok), from the saved tokenizer's config.json, else the run's configuration and the
    size registry."""
    cfg = run.config or {}
    res = (cfg.get("data") or {}).get("resolution")
    model = cfg.get("model") or {}
    patch, dim = model.get("patch"), model.get("bottleneck_dim")
    saved, _ = read_json(run.dir / "tokenizer" / "config.json")
    spec = saved.get("spec") if isinstance(saved, dict) else None
    if isinstance(spec, dict):
        patch, dim = spec.get("patch", patch), spec.get("bottleneck_dim", dim)
    elif (patch is None or dim is None) and model.get("size"):
        from vtp.models.registry import SIZES  # no torch import: a table of dataclasses

        reg = SIZES.get(model["size"])
        patch, dim = patch or getattr(reg, "patch", None), dim or getattr(reg, "bottleneck_dim", None)
    try:
        tokens = (int(res) // int(patch)) ** 2
        return {"tokens": tokens, "dim": int(dim), "E": tokens * int(dim), "E (tokens x dim)": f"{tokens} x {dim}"}
    except (TypeError, ValueError, ZeroDivisionError):
        return {"tokens": None, "dim": None, "E": None, "E (tokens x dim)": None}


def flops(run: Run) -> tuple[float | None, str | None]:
    """Pretraining model FLOPs as measured by the engine (metrics.json), and which field they came from."""
    m = run.stages["tokenizer"].metrics or {}
    for key in ("model_total_flops", "total_flops"):
        v = m.get(key)
        if isinstance(v, (int, float)) and v > 0:
            return float(v), key
    return None, None


def parameters(run: Run) -> int | None:
    m = run.stages["eval"].metrics or {}
    p = (m.get("tokenizer") or {}).get("parameters")
    return int(p) if isinstance(p, (int, float)) else None


def key_metrics(run: Run) -> dict[str, float]:
    """eval summary (psnr, ssim, lpips_vgg, fd_effnetlite0, ...) and the samples' judge accuracy, as named."""
    out: dict[str, float] = {}
    summary = (run.stages["eval"].metrics or {}).get("summary") or {}
    out.update({k: v for k, v in summary.items() if isinstance(v, (int, float)) or v is None})
    samples = run.stages["samples"].metrics or {}
    if isinstance(samples.get("judge_accuracy"), (int, float)):
        out["judge_accuracy"] = samples["judge_accuracy"]
    return out


def run_row(run: Run, fallback: dict | None = None) -> dict[str, Any]:
    """`fallback`: params.yaml's configuration, for a run whose run.json files are all unreadable."""
    cfg = run.config or fallback or {}
    objs = objectives(cfg)
    total, source = flops(run)
    live = next((s for s in run.stages.values() if s.state == "running"), None)
    row = {"config": run.name, "status": run.state, "objectives": "+".join(objs) or None, "kind": kind(objs),
           "size": (cfg.get("model") or {}).get("size"), "parameters": parameters(run), **bottleneck(run),
           "flops": total, "flops_source": source,
           "live step": f"{live.folder} {live.detail}" if live else None,
           "problems": run.problems() or None}
    row.update({f: s.state for f, s in run.stages.items()})
    row.update(key_metrics(run))
    return row


def planned(params: Path | None = None) -> dict[str, dict]:
    """params.yaml's named configurations (base merged with each override): the ones not yet run show too."""
    return collect.planned(params or project_root() / "params.yaml")


def overview(root: Path | None = None, params: Path | None = None) -> pd.DataFrame:
    runs, plan = load_runs(root), planned(params)
    rows = [run_row(r, plan.get(r.name)) for r in runs.values()]
    for name, cfg in plan.items():
        if name not in runs:
            objs = objectives(cfg)
            rows.append({"config": name, "status": "not run", "objectives": "+".join(objs) or None, "kind": kind(objs),
                         "size": (cfg.get("model") or {}).get("size"), "problems": "no runs/<cfg> folder yet",
                         **{f: "not run" for f in STAGES}})
    return pd.DataFrame(rows)


def estimated_flops(config: dict | None) -> float | None:
    """Pretraining model FLOPs estimated from the configuration (vtp.train.compute, as `vtp config list`), for runs
    whose metrics.json predates the engine's count. Seconds per configuration (it measures modules on the meta
    device): the caller caches it."""
    if not config:
        return None
    try:
        from vtp.config import Config
        from vtp.train.compute import pretrain_step_flops

        cfg = Config.model_validate(config)
        return float(pretrain_step_flops(cfg)["total"] * cfg.train.steps)
    except Exception:  # noqa: BLE001 - an unreadable or foreign configuration simply has no estimate
        return None
