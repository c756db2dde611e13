"""PNG plots of the scaling study (matplotlib, Agg backend, imported only here and only when present).

`<metric>_vs_flops.png`: log-log points per objectives group with each group's fitted power law;
`convergence.png`: generation FD over DiT training steps, one line per configuration. Without matplotlib the
caller gets None and says so: no placeholder image is written.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from vtp.fileio import write_bytes_atomic
from vtp.report.collect import number
from vtp.report.fits import groups


def pyplot():
    """matplotlib.pyplot on the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return write_bytes_atomic(path, buf.getvalue())


def plot_vs_flops(plt, rows: list[dict], fits: list[dict], metric: str, path: Path) -> Path | None:
    """None when no configuration has both positive FLOPs and a positive value (nothing to draw on log axes)."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    drawn = False
    for i, (group, members) in enumerate(groups(rows).items()):
        pts = [(number(r.get("model_total_flops")), number(r.get(metric)), r["config"]) for r in members]
        pts = [p for p in pts if p[0] and p[1] and p[0] > 0 and p[1] > 0]
        if not pts:
            continue
        color = f"C{i % 10}"
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=color, label=group, zorder=3)
        for x, y, name in pts:
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        fit = next((f for f in fits if f["metric"] == metric and f["group"] == group and f["x"] ==
                    "model_total_flops"), None)
        if fit and fit["exponent"] is not None and fit["prefactor"] is not None:
            xs = np.geomspace(min(p[0] for p in pts), max(p[0] for p in pts), 50)
            ci = fit["exponent_ci"]
            label = f"b = {fit['exponent']:.3g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else "")
            ax.plot(xs, fit["prefactor"] * xs ** fit["exponent"], color=color, ls="--", label=label)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set(xscale="log", yscale="log", xlabel="tokenizer pretraining FLOPs (model_total_flops)", ylabel=metric,
           title=f"{metric} vs pretraining compute")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    return _save(plt, fig, path)


def plot_convergence(plt, rows: list[dict], path: Path) -> Path | None:
    """None when no configuration has a convergence curve."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    keys = set()
    for r in rows:
        pts = r.get("convergence") or []
        key = next((k for p in pts for k in p if k != "step"), None)
        pts = [(p["step"], number(p.get(key))) for p in pts if key and number(p.get(key)) is not None]
        if pts:
            keys.add(key)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{r['config']} ({r['objectives']})")
    if not keys:
        plt.close(fig)
        return None
    ax.set(xlabel="DiT training step", ylabel=" / ".join(sorted(keys)), title="generation FD convergence")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    return _save(plt, fig, path)
