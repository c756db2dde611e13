"""DiT samples: grids per configuration, class, checkpoint and sampler setting."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: `app` imports as a package

import streamlit as st  # noqa: E402

from app import samples, ui  # noqa: E402

ui.page("Samples", "Grids written by `vtp sample`; judge accuracy is the real-image classifier's, against chance.")
runs = ui.runs()
if not runs:
    ui.no_runs_message()
    st.stop()
sets = samples.sample_sets({n: r.dir for n, r in runs.items()})
missing = [n for n in runs if sets.empty or n not in set(sets["config"])]
if missing:
    st.caption("No sample set yet: " + ", ".join(f"{n} (sample: {runs[n].stages['samples'].state})" for n in missing))
if sets.empty:
    st.warning("No configuration has samples.")
    st.stop()
chosen = ui.pick_runs(sorted(sets["config"].unique()), key="sample_runs")
table = sets[sets["config"].isin(chosen)]
c1, c2 = st.columns(2)
solvers = c1.multiselect("Solver", sorted(table["solver"].dropna().unique()), key="solver")
checkpoints = c2.multiselect("Checkpoint", sorted(table["checkpoint"].astype(str).unique()), key="ckpt")
if solvers:
    table = table[table["solver"].isin(solvers)]
if checkpoints:
    table = table[table["checkpoint"].astype(str).isin(checkpoints)]
st.dataframe(table.drop(columns=["dir"]), hide_index=True)
ui.download_csv(table.drop(columns=["dir"]), "sample-sets", key="dl_sets")
if table.empty:
    st.stop()
labels = sorted({c for d in table["dir"] for c in samples.grids(Path(d))},
                key=lambda c: (c != samples.ALL, c))
cls = st.selectbox("Class", labels, key="cls") if labels else None
cols = st.columns(min(len(table), 4))
for i, (_, row) in enumerate(table.iterrows()):
    with cols[i % len(cols)]:
        spec = (f"{row['solver']} {row['steps']} steps, cfg {row['cfg_scale']}, shift {row['shift']}, "
                f"checkpoint {row['checkpoint']}")
        grid = samples.grids(Path(row["dir"])).get(cls) if cls else None
        st.markdown(f"**{row['config']}** · {row['set']}  \n{spec}  \njudge_accuracy {row['judge_accuracy']}")
        if grid is None:
            st.warning(f"no grid for {cls!r} in {row['dir']}/grids")
            continue
        st.image(str(grid), caption=f"{row['config']}: {cls}", width="stretch")
        ui.download_png(grid, f"samples-{row['config']}-{row['set']}-{cls}".replace(" ", "_"), key=f"dl_s{i}")
        acc = samples.per_class_accuracy(Path(row["dir"]))
        if not acc.empty:
            with st.expander("judge accuracy per class"):
                st.dataframe(acc, hide_index=True)
