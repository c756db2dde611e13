"""`vtp report`: collect the configurations, fit, check the claims, and write reports/.

Writes (atomically): table.csv (every configuration, every number), table.md (key columns), fits.json
({"schema": "vtp.report/1", "fits": [...], "points": [rows], "claims": [...], "plots": [...], "skipped": {...}};
non-finite numbers as null), summary.md (table, key fits, claim verdicts, problems) and, when matplotlib is
installed, <metric>_vs_flops.png and convergence.png.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from vtp.fileio import write_bytes_atomic
from vtp.log import log
from vtp.report import plots
from vtp.report.claims import check_claims, claims_markdown, fd_key, fmt, fmt_ci
from vtp.report.collect import collect
from vtp.report.fits import fit_all

SCHEMA = "vtp.report/1"
ROW_COLUMNS = ("config", "objectives", "kind", "state", "model_total_flops", "steps", "resolution", "patch",
               "bottleneck_dim", "tokens", "E", "equal_compute_with")
KEY_METRICS = ("eval.psnr", "eval.ssim", "eval.lpips_vgg", "eval.zeroshot_top1", "eval.probe_bottleneck_top1",
               "eval.probe_full_top1", "generation.judge_accuracy")
MD_COLUMNS = ("config", "objectives", "kind", "state", "model_total_flops", "E")


def finite(obj: Any) -> Any:
    """JSON has no NaN or infinity: write null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def key_metrics(rows: list[dict]) -> list[str]:
    """The headline metric columns present: rFD and gFD first, then KEY_METRICS."""
    present = {k for r in rows for k in r}
    fds = [k for k in (fd_key(rows, "eval"), fd_key(rows, "generation")) if k]
    return fds + [k for k in KEY_METRICS if k in present]


def problems(row: dict) -> str:
    """Missing files, then the notes (which name each corrupt file with its parser message)."""
    return "; ".join([s for s in row["status"].values() if s.startswith("missing")] + row["notes"])


def table_csv(rows: list[dict]) -> str:
    numbers = sorted({k for r in rows for k in r if "." in k and k not in ROW_COLUMNS})
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*ROW_COLUMNS, *numbers, "problems"])
    for r in rows:
        w.writerow([*("" if r.get(c) is None else r[c] for c in (*ROW_COLUMNS, *numbers)), problems(r)])
    return buf.getvalue()


def _cell(v) -> str:
    text = fmt(v) if isinstance(v, float) else ("" if v is None else str(v))
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(header: list[str], body: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(_cell(v) for v in row) + " |" for row in body])


def table_md(rows: list[dict]) -> str:
    cols = [*MD_COLUMNS, *key_metrics(rows)]
    return markdown_table([*cols, "problems"], [[r.get(c) for c in cols] + [problems(r)] for r in rows])


def fits_md(fits: list[dict], metrics: list[str]) -> str:
    """A table of the key metrics' fits that have a slope, then one line per fit that could not be made."""
    body, unfit = [], []
    for f in (f for f in fits if f["metric"] in metrics):
        power = f["family"] == "power_law"
        slope = f["exponent" if power else "slope"]
        if slope is None:
            unfit.append(f"- {f['metric']} ({f['group']}) vs {f['x']}: {f['note']}")
            continue
        y = f"ln {f['metric']}" if f.get("y_scale") == "log" else f["metric"]
        body.append([y, f["group"], f["x"] if power else "ln E", f["n"], slope,
                     fmt_ci(f["exponent_ci" if power else "slope_ci"]), f.get("prefactor", f.get("intercept")),
                     f["r2"], f["note"]])
    table = markdown_table(["metric", "group", "x", "n", "exponent / slope", "interval", "prefactor / intercept",
                            "R^2", "note"], body) if body else "No key metric could be fitted."
    return "\n".join([table, *([f"\nNot fitted ({len(unfit)}):"] + unfit if unfit else [])])


def _plots(rows, fits, metrics, out_dir: Path) -> tuple[list[str], str | None]:
    plt = plots.pyplot()
    if plt is None:
        why = "matplotlib is not installed: PNG plots skipped (pip install matplotlib to get them)"
        log.warning("report: %s", why)
        return [], why
    made = [plots.plot_vs_flops(plt, rows, fits, m, out_dir / f"{m}_vs_flops.png") for m in metrics]
    made.append(plots.plot_convergence(plt, rows, out_dir / "convergence.png"))
    return [p.name for p in made if p is not None], None


def summary_md(rows, fits, claims, plot_files, skipped) -> str:
    parts = ["# Scaling report", "", f"{len(rows)} configuration(s); x axis: tokenizer pretraining model FLOPs "
             "(model_total_flops); intervals: 95% percentile bootstrap over configurations.", "",
             "## Configurations", "", table_md(rows), "", "## Fits (key metrics; every fit is in fits.json)", "",
             fits_md(fits, key_metrics(rows)), "", "## Paper claims", "", claims_markdown(claims), "", "## Plots", ""]
    parts += [f"- {p}" for p in plot_files] or [f"- none: {skipped.get('plots') or 'nothing to draw'}"]
    return "\n".join(parts) + "\n"


def run_report(configs: list[str], runs_root: Path, out_dir: Path, params_path: Path = Path("params.yaml"), *,
               resamples: int = 1000, seed: int = 0) -> dict:
    """Write reports/ for `configs` (every params.yaml configuration when empty). Returns the fits.json
    document plus `summary_md` (summary.md's text, for the CLI to print) and `files` (what was written)."""
    out_dir = Path(out_dir)
    rows = collect(configs, Path(runs_root), Path(params_path))
    fits = fit_all(rows, resamples=resamples, seed=seed)
    claims = check_claims(rows, fits)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_files, why = _plots(rows, fits, key_metrics(rows), out_dir)
    skipped = {"plots": why} if why else {}
    doc = finite({"schema": SCHEMA, "settings": {"resamples": resamples, "seed": seed, "level": 0.95},
                  "fits": fits, "points": rows, "claims": claims, "plots": plot_files, "skipped": skipped})
    md = summary_md(rows, fits, claims, plot_files, skipped)
    texts = {"table.csv": table_csv(rows), "table.md": table_md(rows) + "\n", "summary.md": md,
             "fits.json": json.dumps(doc, indent=2, allow_nan=False) + "\n"}
    for name, text in texts.items():
        write_bytes_atomic(out_dir / name, text.encode())
    log.info("report: %d configuration(s), %d fits, written to %s", len(rows), len(fits), out_dir)
    return {**doc, "summary_md": md, "files": [*texts, *plot_files]}
