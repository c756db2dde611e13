"""Runs overview: one row per configuration; the selection is what the other pages show by default."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: `app` imports as a package

import streamlit as st  # noqa: E402

from app import dvc, ui  # noqa: E402

ui.page("Runs", "Select rows to carry them to the other pages. Click a column header to sort.")
frame = ui.overview_frame()
if frame.empty:
    ui.no_runs_message()
    st.stop()

stale: dict[str, str] = {}
if st.toggle("Check staleness against `dvc status`", value=True, key="stale_check"):
    status, err = ui.dvc_json("status", "--json")
    if err:
        st.caption(f"Staleness not checked: {err}")
    else:
        stale = dvc.stale_by_config(status, list(frame["config"]))
        short = {c: "stale: " + ", ".join(part.split(":")[0] for part in v.split(" | ")) for c, v in stale.items()}
        frame.insert(2, "stale", frame["config"].map(lambda c: short.get(c, "up to date")))

c1, c2, c3 = st.columns(3)
states = c1.multiselect("Status", sorted(frame["status"].unique()), key="f_status")
kinds = c2.multiselect("Objectives", sorted(frame["objectives"].dropna().unique()), key="f_kind")
text = c3.text_input("Configuration contains", key="f_text")
shown = frame
if states:
    shown = shown[shown["status"].isin(states)]
if kinds:
    shown = shown[shown["objectives"].isin(kinds)]
if text:
    shown = shown[shown["config"].str.contains(text, regex=False)]
shown = shown.reset_index(drop=True)

event = st.dataframe(shown, on_select="rerun", selection_mode="multi-row", key="overview", hide_index=True,
                     column_config={"flops": st.column_config.NumberColumn("flops", format="%.3e"),
                                    "parameters": st.column_config.NumberColumn("parameters", format="%d")})
rows = event.selection.rows if event is not None else []
if rows:
    st.session_state[ui.SELECTED] = list(shown.iloc[rows]["config"])
selected = st.session_state.get(ui.SELECTED, [])
st.markdown(f"**Selected:** {', '.join(selected) if selected else 'none (other pages show the first few runs)'}")
ui.download_csv(shown, "runs-overview", key="dl_overview")

runs = ui.runs()
for name in selected:
    if name in runs:
        with st.expander(f"{name}: {ui.label(runs[name].state)}", expanded=len(selected) == 1):
            ui.show_states(runs[name])
            if stale.get(name):
                st.markdown("**Why dvc would re-run it:**\n" + "\n".join(f"- {x}" for x in stale[name].split(" | ")))
