"""Scaling fits with bootstrap intervals (numpy only).

power_law:  y = a * x^b, least squares of log y on log x (VTP: metric vs pretraining FLOPs, per objectives and E).
log_linear: y = m * ln(E) + c (ViTok: reconstruction vs the bottleneck size E; FD-like metrics on log y, as ViTok
            plots log rFID). Both report R^2 of the fitted line in the space it was fitted in.
Intervals: nonparametric bootstrap over points (resampled with replacement, seeded), percentile interval; a
resample whose x values are all equal has no slope and is skipped (`bootstrap.usable` counts the others). With
few points the percentile bootstrap is optimistic: the note says so. A fit needs >= 3 points; with 2 the line
through them is reported without an interval; with fewer, only why not.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from vtp.report.collect import metric_names, number

MIN_POINTS = 3
MIN_USABLE = 10  # usable resamples below this give no interval
FEW_POINTS = 8  # below this, say the bootstrap interval is optimistic
REC_PREFIXES = ("eval.psnr", "eval.ssim", "eval.lpips", "eval.fd_", "eval.fid_", "eval.kid_")
LOG_Y_MARKERS = (".fd_", ".fid_", ".kid_")  # distances ViTok fits on a log scale


def ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float | None]:
    """slope, intercept and R^2 (None when y is constant) of the least-squares line y ~ x."""
    xm, ym = x.mean(), y.mean()
    slope = float(((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum())
    intercept = float(ym - slope * xm)
    ss_tot = float(((y - ym) ** 2).sum())
    r2 = None if ss_tot == 0 else 1.0 - float(((y - (slope * x + intercept)) ** 2).sum()) / ss_tot
    return slope, intercept, r2


def bootstrap_lines(x: np.ndarray, y: np.ndarray, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Slopes and intercepts of the usable resamples (vectorised: one (resamples, n) index draw)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(resamples, len(x)))
    X, Y = x[idx], y[idx]
    ok = ~np.all(X == X[:, :1], axis=1)
    X, Y = X[ok], Y[ok]
    xm, ym = X.mean(1, keepdims=True), Y.mean(1, keepdims=True)
    slopes = ((X - xm) * (Y - ym)).sum(1) / ((X - xm) ** 2).sum(1)
    return slopes, ym[:, 0] - slopes * xm[:, 0]


def _interval(values: np.ndarray, level: float) -> list[float]:
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


def _line(x: np.ndarray, y: np.ndarray, resamples: int, seed: int, level: float) -> dict:
    """The shared core: the fitted line, its intervals and the notes, in the transformed space."""
    n, distinct = len(x), len(np.unique(x))
    out: dict = {"n": n, "slope": None, "intercept": None, "slope_ci": None, "intercept_ci": None, "r2": None,
                 "bootstrap": None, "note": ""}
    if n < 2 or distinct < 2:
        out["note"] = f"no fit: {n} point(s) with usable x and y" if n < 2 else \
            f"no fit: all {n} points share one x value"
        return out
    out["slope"], out["intercept"], r2 = ols(x, y)
    if n < MIN_POINTS:
        out["note"] = f"2 points: the line through them, no interval (needs >= {MIN_POINTS} points)"
        return out
    out["r2"] = r2
    slopes, intercepts = bootstrap_lines(x, y, resamples, seed)
    out["bootstrap"] = {"resamples": resamples, "usable": int(len(slopes)), "level": level, "seed": seed}
    notes = []
    if len(slopes) >= MIN_USABLE:
        out["slope_ci"], out["intercept_ci"] = _interval(slopes, level), _interval(intercepts, level)
    else:
        notes.append(f"only {len(slopes)} usable resamples: no interval")
    if distinct < MIN_POINTS:
        notes.append(f"only {distinct} distinct x values")
    if r2 is None:
        notes.append("y is constant")
    if n < FEW_POINTS:
        notes.append(f"n = {n}: bootstrap interval optimistic at small n")
    out["note"] = "; ".join(notes)
    return out


def _exp(v: float | None) -> float | None:
    return None if v is None else float(np.exp(v))


def power_law(x, y, *, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """y = a x^b on the points with positive x and y: exponent b, prefactor a, their intervals and R^2 (log-log)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    core = _line(np.log(x[keep]), np.log(y[keep]), resamples, seed, level)
    fit = {"family": "power_law", "n": core["n"], "exponent": core["slope"], "prefactor": _exp(core["intercept"]),
           "exponent_ci": core["slope_ci"],
           "prefactor_ci": [_exp(v) for v in core["intercept_ci"]] if core["intercept_ci"] else None,
           "r2": core["r2"], "bootstrap": core["bootstrap"], "note": core["note"]}
    if (~keep).sum():
        fit["note"] = "; ".join(filter(None, [f"{int((~keep).sum())} non-positive point(s) left out", fit["note"]]))
    return fit


def log_linear(E, y, *, log_y: bool = False, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """y (or ln y) = m ln(E) + c: slope m, intercept c, their intervals and R^2."""
    E, y = np.asarray(E, float), np.asarray(y, float)
    keep = (E > 0) & np.isfinite(E) & np.isfinite(y) & ((y > 0) if log_y else True)
    core = _line(np.log(E[keep]), np.log(y[keep]) if log_y else y[keep], resamples, seed, level)
    fit = {"family": "log_linear", "y_scale": "log" if log_y else "linear", "n": core["n"],
           "slope": core["slope"], "intercept": core["intercept"], "slope_ci": core["slope_ci"],
           "intercept_ci": core["intercept_ci"], "r2": core["r2"], "bootstrap": core["bootstrap"],
           "distinct_E": int(len(np.unique(E[keep]))), "note": core["note"]}
    if (~keep).sum():
        fit["note"] = "; ".join(filter(None, [f"{int((~keep).sum())} unusable point(s) left out", fit["note"]]))
    return fit


def _points(rows: list[dict], x: str, metric: str) -> tuple[list[str], list[float], list[float]]:
    pts = [(r["config"], number(r.get(x)), number(r.get(metric))) for r in rows]
    pts = [p for p in pts if p[1] is not None and p[2] is not None]
    return [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts]


def groups(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows by objectives and E, the sets a FLOPs fit may pool: "clip+ssl+rec", "rec", ... , or "rec, E=128" where
    that objectives label has more than one E (an E sweep's other points are not budget points). Rows with no
    known objectives form no group."""
    by: dict[tuple[str, Any], list[dict]] = {}
    for r in rows:
        if r.get("objectives"):
            by.setdefault((r["objectives"], r.get("E")), []).append(r)
    e_values = Counter(o for o, _ in by)  # how many E values each objectives label has
    named = {(o if e_values[o] == 1 else f"{o}, E={E}"): members for (o, E), members in by.items()}
    return dict(sorted(named.items()))


def objectives_of(group: str) -> str:
    """The objectives label a group name starts with."""
    return group.split(",")[0]


def e_sweeps(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows by `e_sweep` (configurations that differ only in E), keeping the sets with >= 2 distinct E values; each
    is named "<objectives> @ <its first configuration>"."""
    by_key: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("e_sweep") and r.get("E") is not None:
            by_key.setdefault(r["e_sweep"], []).append(r)
    return {f"{m[0]['objectives'] or 'no objectives'} @ {m[0]['config']}": m for m in by_key.values()
            if len({r["E"] for r in m}) >= 2}


def fit_all(rows: list[dict], *, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> list[dict]:
    """Every eval./generation. metric vs model_total_flops per objectives group (where the group has the metric
    at all), and every reconstruction metric vs E within each E sweep (pooling configurations that differ in
    budget or objectives as well would fit those differences, not E's)."""
    boot = dict(resamples=resamples, seed=seed, level=level)
    fits = []
    for metric in metric_names(rows):
        for group, members in groups(rows).items():
            have = [r for r in members if number(r.get(metric)) is not None]
            if not have:
                continue
            names, xs, ys = _points(have, "model_total_flops", metric)
            fit = power_law(xs, ys, **boot)
            if len(names) < len(have):
                fit["note"] = "; ".join(filter(None, [f"{len(have) - len(names)} config(s) without "
                                                      "model_total_flops", fit["note"]]))
            fits.append({"metric": metric, "group": group, "x": "model_total_flops", "configs": names, **fit})
    for group, members in e_sweeps(rows).items():
        for metric in metric_names(members, REC_PREFIXES):
            names, xs, ys = _points(members, "E", metric)
            fit = log_linear(xs, ys, log_y=any(m in metric for m in LOG_Y_MARKERS), **boot)
            fits.append({"metric": metric, "group": group, "x": "E", "configs": names, **fit})
    return fits
