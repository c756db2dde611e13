"""The evaluation's output files: `metrics.json` (the full record) and `summary.json` (flat, for DVC).

metrics.json, schema "vtp.eval/1":
    {"schema": "vtp.eval/1", "summary": {<name>: number, ...}, "config": <config name>, "tokenizer": {...},
     "resolution": R, "dataset": ..., "split": "val", "settings": {<cfg.eval>},
     "metrics": {<name>: {"value": number, "n": samples, "feature_space": ..., "resolution": R,
                          "protocol": "<what exactly was computed>", ...}, ...},
     "skipped": {<group>: "<reason>"}, "timing": {<step>: {"seconds": s, "images_per_s": r}}}

`summary` repeats each metric's value under its name (psnr, ssim, lpips_vgg, fd_effnetlite0 | fid_inception,
kid_effnetlite0, zeroshot_top1, probe_bottleneck_top1, ...). `dvc metrics show` flattens every number of a
JSON file, so metrics.json alone would also show sample counts and resolutions; summary.json holds only the
`summary` mapping and is the file to declare under `metrics:` in dvc.yaml (metrics.json is a plain output).
Non-finite values (e.g. PSNR of a lossless reconstruction) are written as null, since JSON has no infinity.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from vtp.fileio import write_bytes_atomic

SCHEMA = "vtp.eval/1"


def record(value: float, *, n: int, feature_space: str, resolution: int, protocol: str, **extra: Any) -> dict:
    """One metric's entry: its value plus what it was measured on and how."""
    return {"value": float(value), "n": int(n), "feature_space": feature_space, "resolution": int(resolution),
            "protocol": protocol, **extra}


def summary(metrics: dict[str, dict]) -> dict[str, float]:
    return {name: m["value"] for name, m in metrics.items()}


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _write_json(path: Path, data: Any) -> None:
    write_bytes_atomic(path, (json.dumps(_finite(data), indent=2, allow_nan=False) + "\n").encode())


def write_report(out_dir: str | Path, doc: dict) -> dict:
    """Write metrics.json (doc with `schema` and `summary` added) and summary.json, atomically; returns the doc."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"schema": SCHEMA, "summary": summary(doc["metrics"]), **doc}
    _write_json(out_dir / "metrics.json", doc)
    _write_json(out_dir / "summary.json", doc["summary"])
    return doc


def read_report(path: str | Path) -> dict:
    """Load a metrics.json, refusing files of another schema."""
    doc = json.loads(Path(path).read_text())
    if doc.get("schema") != SCHEMA:
        raise ValueError(f"{path}: expected schema {SCHEMA!r}, got {doc.get('schema')!r}")
    return doc
