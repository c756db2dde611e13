"""DVC experiments (`dvc exp show --json`): the workspace, baseline commits and experiments, compared."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: `app` imports as a package

import streamlit as st  # noqa: E402

from app import data, dvc, provenance, ui  # noqa: E402

ui.page("DVC experiments", "Cached per DVC revision (dvc.lock, params.yaml, git refs).")
shown, err = ui.dvc_json("exp", "show", "--json")
if err:
    st.info(f"No DVC experiments to show: {err}. The runs folder alone is shown on the other pages "
            f"(project root `{data.project_root()}`, set VTP_PROJECT_ROOT).")
    st.stop()
frame = dvc.experiments_frame(shown)
if frame.empty:
    st.info("`dvc exp show` lists nothing.")
    st.stop()
st.caption(f"{(frame['kind'] == 'experiment').sum()} experiment(s); "
           "`dvc exp run -S train.lr=...` adds more, `dvc exp apply NAME` restores one.")
only_varying = st.checkbox("Only columns that differ", value=True, key="varying")
params = dvc.varying(frame, "params:") if only_varying else [c for c in frame if c.startswith("params:")]
metrics = dvc.varying(frame, "metrics:") if only_varying else [c for c in frame if c.startswith("metrics:")]
base = ["rev", "name", "kind", "baseline", "timestamp", "error"]
table = frame[base + params + metrics]
event = st.dataframe(table, on_select="rerun", selection_mode="multi-row", key="exps", hide_index=True)
ui.download_csv(table, "dvc-experiments", key="dl_exps")
rows = event.selection.rows if event is not None else []
if len(rows) >= 2:
    a, b = (frame.iloc[i] for i in rows[:2])
    la, lb = f"{a['name'] or a['rev']}", f"{b['name'] or b['rev']}"
    pa = {k.split(":", 2)[2]: v for k, v in a.items() if k.startswith("params:")}
    pb = {k.split(":", 2)[2]: v for k, v in b.items() if k.startswith("params:")}
    st.subheader(f"{la} vs {lb}: parameters")
    st.dataframe(provenance.param_diff(pa, pb, la, lb + " " if la == lb else lb), hide_index=True)
    st.subheader("metrics")
    cols = [c for c in frame if c.startswith("metrics:")]
    st.dataframe(frame.iloc[rows][["rev", "name"] + cols].set_index("rev").T, width="stretch")
else:
    st.caption("Select two rows to compare their parameters and metrics.")
