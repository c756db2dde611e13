"""Provenance of a run: its run.json (commit, parameters, versions, host, time) and how to reproduce it."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: `app` imports as a package

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from app import data, provenance, ui  # noqa: E402

ui.page("Provenance", "Every stage writes run.json beside its outputs (vtp.runinfo).")
runs = ui.runs()
if not runs:
    ui.no_runs_message()
    st.stop()
names = list(runs)
selected = [n for n in st.session_state.get(ui.SELECTED, []) if n in names]
c1, c2 = st.columns(2)
name = c1.selectbox("Configuration", names, index=names.index(selected[0]) if selected else 0, key="prov_run")
folder = c2.selectbox("Stage", list(data.STAGES), format_func=lambda f: f"{f} ({data.STAGES[f]})", key="prov_stage")
state = runs[name].stages[folder]
st.markdown(f"**State:** {ui.label(state.state)} — {state.detail}")
st.subheader("Reproduce")
for what, cmd in provenance.commands(name, folder, state.run).items():
    st.code(cmd, language="bash")
if state.run is None:
    st.warning(f"No readable run.json in {runs[name].dir / folder}: {state.detail}")
    st.stop()
st.subheader("Record")
info = provenance.summary(state.run)
st.table(pd.DataFrame([{"field": k, "value": str(v)} for k, v in info.items() if v is not None]).set_index("field"))
if info.get("error"):
    st.error(info["error"])
c1, c2 = st.columns(2)
with c1:
    st.markdown("**Package versions**")
    st.json(state.run.get("packages") or {}, expanded=True)
with c2:
    st.markdown("**Parameters (resolved configuration)**")
    st.json(state.run.get("config") or {}, expanded=False)
st.download_button("Download run.json", json.dumps(state.run, indent=2).encode(), f"{name}-{folder}-run.json",
                   "application/json", key="dl_run")
