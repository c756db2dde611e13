"""One row per configuration from the files its stages wrote; nothing here raises on a missing or bad file.

Read per configuration (runs/<cfg>/...), each a *part* of the row with a status "ok", "missing: <file>" or
"corrupt: <file>" (the parser's message goes to the row's `notes`):
    pretrain   tokenizer/metrics.json    model_total_flops (the x axis), step, wall_s, losses -> pretrain.<key>
    tokenizer  tokenizer/config.json     the saved spec: patch, bottleneck_dim (for E)
    run        tokenizer/run.json        the resolved configuration: objectives, resolution, equal_compute_with
    eval       eval/summary.json         reconstruction / understanding metrics -> eval.<key>
    generation generation/summary.json   metrics of the DiT's samples -> generation.<key>
plus generation/metrics.json (or convergence.json) for the FD convergence curve. E = tokens x bottleneck_dim
with tokens = (resolution // patch)^2 (ViTok). A configuration without run.json falls back to params.yaml's.
`e_sweep` keys the configurations that differ only in what sets E, the sets ViTok's ln E fit may pool.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import yaml

OBJECTIVES = ("clip", "ssl", "rec")
PARTS = {"pretrain": "tokenizer/metrics.json", "tokenizer": "tokenizer/config.json", "run": "tokenizer/run.json",
         "eval": "eval/summary.json", "generation": "generation/summary.json"}
FILES = (*PARTS.values(), "generation/convergence.json")  # what a row reads: the report stage's deps per config
NAMESPACED = ("pretrain", "eval", "generation")  # parts whose numbers become `<part>.<key>` columns
SHARED = {"judge"}  # runs/judge is one classifier for every configuration, not a configuration


def read_json(path: Path) -> tuple[Any, str | None]:
    """(data, None), or (None, why not): 'missing' or 'corrupt: <parser message>'."""
    try:
        return json.loads(Path(path).read_text()), None
    except FileNotFoundError:
        return None, "missing"
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return None, f"corrupt: {type(e).__name__}: {e}"


def number(v: Any) -> float | None:
    """A finite number (bools are not metrics), else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def objectives(config: dict | None) -> list[str]:
    loss = (config or {}).get("loss") or {}
    return [k for k in OBJECTIVES if loss.get(k)]


def kind(objs: list[str]) -> str | None:
    """'AE-only' (reconstruction alone) or 'VTP' (with CLIP and/or SSL): the families the claims compare."""
    if not objs:
        return None
    return "AE-only" if objs == ["rec"] else "VTP"


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def planned(params_path: Path) -> dict[str, dict]:
    """params.yaml's named configurations (base merged with each override; unvalidated, no derived steps)."""
    try:
        raw = yaml.safe_load(Path(params_path).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    configs = raw.get("configs") if isinstance(raw, dict) else None
    if not isinstance(configs, dict):
        return {}
    base = {k: v for k, v in raw.items() if k != "configs"}
    return {str(name): _merge(base, o or {}) for name, o in configs.items()}


E_FIELDS = (("model", "patch"), ("model", "bottleneck_dim"))  # what E sweeps change


def e_sweep(config: dict) -> str:
    """A key shared by the configurations that differ only in E: the configuration less its name, patch and
    bottleneck_dim, and less train.steps when they are derived from equal compute with a reference (E changes the
    step's FLOPs, so the derived steps differ along a sweep that holds the compute fixed)."""
    rest = json.loads(json.dumps(config, default=str))  # a deep copy that any value survives
    rest.pop("name", None)
    for section, field in E_FIELDS:
        (rest.get(section) or {}).pop(field, None)
    train = rest.get("train") or {}
    if train.get("equal_compute_with"):
        train.pop("steps", None)
    return hashlib.sha1(json.dumps(rest, sort_keys=True).encode()).hexdigest()[:12]


def bottleneck(config: dict, spec: dict | None) -> dict[str, Any]:
    """tokens, dim and E from the saved spec, else the configuration's patch / bottleneck_dim, else the size
    registry's defaults (a table of dataclasses: no torch import)."""
    model = config.get("model") or {}
    patch, dim = model.get("patch"), model.get("bottleneck_dim")
    if isinstance(spec, dict):
        patch, dim = spec.get("patch", patch), spec.get("bottleneck_dim", dim)
    elif (patch is None or dim is None) and model.get("size"):
        from vtp.models.registry import SIZES

        reg = SIZES.get(model["size"])
        patch, dim = patch or getattr(reg, "patch", None), dim or getattr(reg, "bottleneck_dim", None)
    res = (config.get("data") or {}).get("resolution")
    try:
        tokens = (int(res) // int(patch)) ** 2
        return {"resolution": int(res), "patch": int(patch), "bottleneck_dim": int(dim), "tokens": tokens,
                "E": tokens * int(dim)}
    except (TypeError, ValueError, ZeroDivisionError):
        return {"resolution": res, "patch": patch, "bottleneck_dim": dim, "tokens": None, "E": None}


def _convergence(gen_dir: Path, notes: list[str]) -> list[dict]:
    """[{step, <fd key>: value}, ...] from generation/metrics.json, else convergence.json; [] when neither."""
    for name, key in (("metrics.json", "convergence"), ("convergence.json", "points")):
        data, err = read_json(gen_dir / name)
        if err and err != "missing":
            notes.append(f"{gen_dir / name}: {err}")
        points = data.get(key) if isinstance(data, dict) else None
        if isinstance(points, list) and points:
            return [p for p in points if isinstance(p, dict) and number(p.get("step")) is not None]
    return []


def collect_row(runs_root: Path, name: str, fallback: dict | None = None) -> dict[str, Any]:
    """The row of configuration `name`; `fallback`: its params.yaml configuration, used without run.json."""
    d = Path(runs_root) / name
    status, notes, data = {}, [], {}
    for part, rel in PARTS.items():
        doc, err = read_json(d / rel)
        if err is None and not isinstance(doc, dict):
            err = "corrupt: not a JSON object"
        status[part] = "ok" if err is None else f"{err.split(':')[0]}: {d / rel}"
        if err and err != "missing":
            notes.append(f"{d / rel}: {err}")
        data[part] = doc if err is None else {}
    run = data["run"]
    config = run.get("config") if isinstance(run.get("config"), dict) else None
    if run and run.get("status") not in (None, "ok"):
        notes.append(f"{d / PARTS['run']}: pretrain status {run.get('status')!r}")
    if config is None and fallback:
        config = fallback
        notes.append("configuration from params.yaml (no readable tokenizer/run.json)")
    config = config or {}
    objs = objectives(config)
    pre = data["pretrain"]
    flops = number(pre.get("model_total_flops"))
    if status["pretrain"] == "ok" and (flops is None or flops <= 0):
        notes.append("no positive model_total_flops in tokenizer/metrics.json (older engine?): no x for fits")
        flops = None
    row: dict[str, Any] = {
        "config": name, "objectives": "+".join(objs) or None, "kind": kind(objs),
        "size": (config.get("model") or {}).get("size"),
        **bottleneck(config, data["tokenizer"].get("spec")),
        "model_total_flops": flops, "steps": number(pre.get("step")), "wall_s": number(pre.get("wall_s")),
        "equal_compute_with": (config.get("train") or {}).get("equal_compute_with"),
        "e_sweep": e_sweep(config) if config else None,
        "state": "complete" if all(s == "ok" for s in status.values()) else "partial",
        "status": status, "notes": notes,
    }
    for part in NAMESPACED:
        for k, v in data[part].items():
            if number(v) is not None and not (part == "pretrain" and k in ("model_total_flops", "step", "wall_s")):
                row[f"{part}.{k}"] = number(v)
    row["convergence"] = _convergence(d / "generation", notes)
    return row


def config_names(runs_root: Path, params_path: Path) -> list[str]:
    """params.yaml's configurations, else the folders under runs/ (the shared judge excluded)."""
    names = list(planned(params_path))
    if names:
        return names
    root = Path(runs_root)
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in SHARED) if root.is_dir() else []


def collect(configs: list[str], runs_root: Path, params_path: Path = Path("params.yaml")) -> list[dict]:
    """Rows for `configs` (all of params.yaml's, or of runs/, when empty)."""
    plan = planned(params_path)
    return [collect_row(runs_root, n, plan.get(n)) for n in (configs or config_names(runs_root, params_path))]


def metric_names(rows: list[dict], prefixes: tuple[str, ...] = ("eval.", "generation.")) -> list[str]:
    """Every metric column present in some row, in first-seen order."""
    seen: dict[str, None] = {}
    for r in rows:
        seen.update({k: None for k in r if k.startswith(prefixes)})
    return list(seen)
