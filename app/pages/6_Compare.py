"""Two runs side by side: their overview rows, metrics with the difference, and the parameters that differ."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: `app` imports as a package

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from app import provenance, recon, ui  # noqa: E402

ui.page("Compare two runs")
runs, frame = ui.runs(), ui.overview_frame()
names = list(runs)
if len(names) < 2:
    st.info("Comparing needs two configurations under the runs root.") if names else ui.no_runs_message()
    st.stop()
picked = [n for n in st.session_state.get(ui.SELECTED, []) if n in names] + names
a_default = picked[0]
b_default = next(n for n in picked if n != a_default)
c1, c2 = st.columns(2)
a = c1.selectbox("Run A", names, index=names.index(a_default), key="run_a")
b = c2.selectbox("Run B", names, index=names.index(b_default), key="run_b")
rows = frame.set_index("config").loc[[a, b]].T
rows.columns = [f"A: {a}", f"B: {b}"]
numeric = rows.apply(pd.to_numeric, errors="coerce")
side = rows.astype(str).assign(**{"B - A": (numeric.iloc[:, 1] - numeric.iloc[:, 0]).map(
    lambda v: "" if pd.isna(v) else f"{v:.4g}")})
st.dataframe(side, width="stretch")
ui.download_csv(side.reset_index(names="field"), f"compare-{a}-{b}", key="dl_side")
for col, name in ((c1, a), (c2, b)):
    with col:
        st.markdown(f"**{name}**: {ui.label(runs[name].state)}")
        ui.show_states(runs[name])
        grid = recon.saved_grid(runs[name].dir)
        if grid:
            st.image(str(grid), caption=f"{name}: eval reconstructions", width="stretch")

st.subheader("Parameter diff")
if runs[a].config is None or runs[b].config is None:
    st.warning("A run without a readable run.json has no recorded parameters: "
               + ", ".join(n for n in (a, b) if runs[n].config is None))
diff = provenance.param_diff(runs[a].config, runs[b].config, a if a != b else f"{a} (A)", b if a != b else f"{b} (B)")
if diff.empty:
    st.success("Same parameters.")
else:
    st.dataframe(diff, hide_index=True, width="stretch")
    ui.download_csv(diff, f"param-diff-{a}-{b}", key="dl_diff")
