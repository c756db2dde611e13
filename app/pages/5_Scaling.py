"""Scaling curves: a metric against pretraining FLOPs, parameters or E, log-log, AE-only against VTP."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: `app` imports as a package

import altair as alt  # noqa: E402
import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from app import data, overview, reports, ui  # noqa: E402


@st.cache_data(show_spinner="estimating FLOPs …")
def estimate(name: str, config_json: str) -> float | None:  # keyed on the configuration itself
    return overview.estimated_flops(json.loads(config_json))


ui.page("Scaling", "Points from the runs' metrics files; fits (with their intervals) from reports/*.json.")
frame = ui.overview_frame()
if frame.empty:
    ui.no_runs_message()
    st.stop()
skip = {"config", "status", "objectives", "kind", "size", "parameters", "tokens", "dim", "E", "E (tokens x dim)",
        "flops", "flops_source", "live step", "problems", "stale", "tokenizer", "eval", "latents", "dit", "samples"}
metrics = [c for c in frame.columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c])]
if not metrics:
    st.warning("No configuration has evaluation metrics yet.")
    st.stop()
c1, c2 = st.columns(2)
metric = c1.selectbox("Metric", metrics, index=metrics.index("psnr") if "psnr" in metrics else 0, key="metric")
x = c2.selectbox("Against", list(reports.AXES), format_func=reports.AXES.get, key="axis")
if x == "flops" and frame["flops"].isna().any() and st.checkbox(
        "Estimate FLOPs where metrics.json has none (vtp.train.compute, as `vtp config list`; slow once)",
        key="estimate"):
    runs = ui.runs()
    guess = {n: estimate(n, json.dumps(runs[n].config, sort_keys=True)) for n in frame.loc[frame["flops"].isna(),
                                                                                           "config"] if n in runs}
    frame["flops_source"] = [("estimated" if pd.isna(f) and guess.get(c) else s)
                             for c, f, s in zip(frame["config"], frame["flops"], frame["flops_source"])]
    frame["flops"] = [guess.get(c) if pd.isna(f) else f for c, f in zip(frame["config"], frame["flops"])]
points, notes = reports.scaling_points(frame, metric, x)
with st.expander(f"{len(notes)} configuration(s) without a point", expanded=False):
    for n in notes:
        st.caption(n)
if points.empty:
    st.warning(f"No configuration has both {x} and {metric}.")
else:
    chart = alt.Chart(points).mark_line(point=True).encode(
        x=alt.X(f"{x}:Q", title=reports.AXES[x], scale=alt.Scale(type="log")),
        y=alt.Y(f"{metric}:Q", title=metric, scale=alt.Scale(type="log")),
        color=alt.Color("kind:N", title="objectives"), detail="kind:N", tooltip=["config", "kind", x, metric])
    found = reports.read_reports(data.reports_root())
    for path, doc, err in found:  # a report's fit of this metric on this axis is drawn over the points
        for _, fit in (reports.fits(doc) if not err else pd.DataFrame()).iterrows():
            line = reports.fit_curve(fit.to_dict(), points[x].to_numpy())
            if fit.get("metric") == metric and fit.get("x") == x and line is not None:
                label = f"fit {fit.get('family') or fit.get('kind') or ''} ({path.name})".replace("  ", " ")
                chart += alt.Chart(line.assign(fit=label)).mark_line(strokeDash=[4, 3]).encode(
                    x="x:Q", y="y:Q", strokeDash="fit:N")
    st.altair_chart(chart, width="stretch")
    for kind, grp in points.groupby("kind"):
        slope = reports.loglog_slope(grp, x, metric)
        st.caption(f"{kind}: {len(grp)} point(s)" + (f", log-log slope {slope:.3f} (descriptive least squares, no "
                                                      "interval; see the report's fits)" if slope is not None else ""))
    ui.download_csv(points, f"scaling-{metric}-vs-{x}", key="dl_points")

st.subheader("Report fits")
found = reports.read_reports(data.reports_root())
if not found:
    st.info(f"No report yet: no {data.reports_root()}/*.json (the scaling report is not built; "
            "its fits will show here when present).")
for path, doc, err in found:
    if err:
        st.error(f"{path}: {err}")
        continue
    fits = reports.fits(doc)
    st.markdown(f"**{path.name}**: {len(fits)} fit(s)")
    if fits.empty:
        st.json(doc, expanded=False)
        continue
    st.dataframe(fits, hide_index=True)
    ui.download_csv(fits, f"fits-{path.stem}", key=f"dl_fits_{path.stem}")
