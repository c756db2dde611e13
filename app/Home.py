"""vtp explorer: `streamlit run app/Home.py` (make app). Read-only over runs/, reports/ and DVC."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: `app` imports as a package

import streamlit as st  # noqa: E402

from app import data, dvc, ui  # noqa: E402

ui.page("vtp explorer", "Visual tokenizers pre-trained by vtp: runs, reconstructions, samples, curves and scaling.")
frame = ui.overview_frame()
st.markdown(f"Runs root `{data.runs_root()}` · reports `{data.reports_root()}` · project `{data.project_root()}` "
            "(set `VTP_RUNS_ROOT`, `VTP_REPORTS_ROOT`, `VTP_PROJECT_ROOT` to look elsewhere)")
if frame.empty:
    ui.no_runs_message()
else:
    counts = frame["status"].value_counts()
    cols = st.columns(len(counts))
    for col, (state, n) in zip(cols, counts.items()):
        col.metric(ui.label(state), int(n))
dvc_ok = dvc.dvc_command() is not None and (data.project_root() / ".dvc").is_dir()
st.markdown(f"DVC: {'available' if dvc_ok else 'not available here (runs/ alone is shown)'}")
st.subheader("Pages")
for path, what in [("pages/1_Runs.py", "Runs overview: every configuration, its state and key metrics"),
                   ("pages/2_Reconstructions.py", "Original | reconstruction | error, same images everywhere"),
                   ("pages/3_Samples.py", "DiT sample grids per configuration, class and sampler setting"),
                   ("pages/4_Training_curves.py", "dvclive curves of several runs overlaid"),
                   ("pages/5_Scaling.py", "Metric against FLOPs, parameters or E; the report's fits"),
                   ("pages/6_Compare.py", "Two runs side by side with their parameter diff"),
                   ("pages/7_Provenance.py", "run.json and the command that reproduces a run"),
                   ("pages/8_Experiments.py", "DVC experiments (dvc exp show) compared")]:
    st.page_link(path, label=what)
