"""Training curves from dvclive, several runs overlaid, linear or log axes."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: `app` imports as a package

import altair as alt  # noqa: E402
import streamlit as st  # noqa: E402

from app import curves, ui  # noqa: E402

ui.page("Training curves", "dvclive's plots/metrics/*.tsv; a running stage shows as far as it has logged.")
runs = ui.runs()
if not runs:
    ui.no_runs_message()
    st.stop()
stage = st.radio("Stage", curves.TRAINING, horizontal=True, format_func={"tokenizer": "tokenizer (pretrain)",
                                                                         "dit": "DiT (train-dit)"}.get, key="stage")
dirs = {n: r.dir for n, r in runs.items()}
with_curves = [n for n in dirs if curves.metric_files(curves.live_dir(dirs[n], stage))]
for n in sorted(set(dirs) - set(with_curves)):
    st.caption(f"{n}: no {stage} dvclive curves ({stage}: {runs[n].stages[stage].state})")
if not with_curves:
    st.warning(f"No configuration has {stage} curves yet.")
    st.stop()
chosen = ui.pick_runs(with_curves, key="curve_runs")
names = curves.available({n: dirs[n] for n in chosen}, stage)
if not names:
    st.stop()
metric = st.selectbox("Metric", names, index=names.index("loss") if "loss" in names else 0, key="metric")
c1, c2 = st.columns(2)
logx, logy = c1.checkbox("log x", key="logx"), c2.checkbox("log y", value=True, key="logy")
frame, notes = curves.curves({n: dirs[n] for n in chosen}, stage, metric)
for note in notes:
    st.caption(note)
if frame.empty:
    st.warning(f"No values of {metric}.")
    st.stop()
plot = frame[(frame["value"] > 0) | (not logy)]
chart = alt.Chart(plot).mark_line(point=len(plot) < 60).encode(
    x=alt.X("step:Q", scale=alt.Scale(type="log" if logx else "linear")),
    y=alt.Y("value:Q", title=metric, scale=alt.Scale(type="log" if logy else "linear")),
    color="config:N", tooltip=["config", "step", "value"])
st.altair_chart(chart.interactive(), width="stretch")
ui.download_csv(frame, f"curve-{stage}-{metric.replace('/', '_')}", key="dl_curve")
for n in chosen:
    s = runs[n].stages[stage]
    if s.state == "running":
        st.info(f"{n}: {stage} is running — {s.detail}")
with st.expander("Last logged values (dvclive metrics.json)"):
    st.json({n: curves.live_summary(dirs[n], stage) for n in chosen})
