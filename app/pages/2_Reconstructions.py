"""Original | reconstruction | error for the same validation images across configurations."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: `app` imports as a package

import streamlit as st  # noqa: E402

from app import data, recon, ui  # noqa: E402

SAVED, LIVE = "saved evaluation grids", "reconstruct now with the saved tokenizer"


@st.cache_resource(show_spinner="loading tokenizer …")
def tokenizer(directory: str, mtime: float):  # mtime: a retrained model reloads
    return recon.load_tokenizer(Path(directory))


@st.cache_data(show_spinner="reading validation images …")
def images(config: dict, indices: tuple[int, ...], project: str):
    return recon.val_images(config, list(indices), Path(project))


def resolution(run: data.Run) -> int | None:
    return ((run.config or {}).get("data") or {}).get("resolution")


ui.page("Reconstructions", "original | reconstruction | error (|difference| x 4, as vtp.eval.grids draws it)")
runs = ui.runs()
if not runs:
    ui.no_runs_message()
    st.stop()
source = st.radio("Source", [SAVED, LIVE], horizontal=True, key="source")
usable = {n: r for n, r in runs.items() if (recon.saved_grid(r.dir) if source == SAVED else
                                             r.stages["tokenizer"].state == "finished") and resolution(r)}
for n in sorted(set(runs) - set(usable)):
    st.caption(f"{n}: not shown — " + ("no eval/grids/reconstruction.png (evaluate: "
                                      f"{runs[n].stages['eval'].state})" if source == SAVED else
                                      f"tokenizer {runs[n].stages['tokenizer'].state}"))
if not usable:
    st.warning("No configuration has " + ("saved grids" if source == SAVED else "a finished tokenizer") + ".")
    st.stop()
chosen = ui.pick_runs(list(usable), key="recon_runs")
if not chosen:
    st.stop()
first = usable[chosen[0]]
count = recon.grid_count(recon.saved_grid(first.dir), resolution(first)) if source == SAVED else 64
picked = st.multiselect("Validation images (index in the val split)", list(range(count)), default=list(range(4)),
                        key="recon_images")
scale = st.slider("Zoom", 1, 8, 4, key="zoom")
if not picked:
    st.stop()
if len({resolution(usable[n]) for n in chosen}) > 1:
    st.warning("These configurations run at different resolutions: each row shows its own val images.")
if source == LIVE and not st.button("Reconstruct", key="go"):
    st.info("Loads each tokenizer (cached) and reconstructs the chosen images on this machine's CPU/GPU.")
    st.stop()

rows, originals = [], None
for name in chosen:
    run = usable[name]
    try:
        if source == SAVED:
            tiles = [t for i in picked for t in recon.grid_triplet(recon.saved_grid(run.dir), i, resolution(run))]
            note = "saved by vtp evaluate"
        else:
            model = run.dir / "tokenizer"
            tok = tokenizer(str(model), (model / "model.safetensors").stat().st_mtime)
            imgs, where = images(run.config, tuple(picked), str(data.project_root()))
            rec, err, scores = recon.reconstruct(tok, imgs)
            tiles = [t for i in range(len(picked)) for t in (imgs[i], rec[i], err[i])]
            note = f"{where}; PSNR " + ", ".join(f"{s:.2f}" for s in scores) + " dB"
    except Exception as e:  # noqa: BLE001 - a broken run is reported on its row, the page goes on
        st.error(f"{name}: cannot show reconstructions: {type(e).__name__}: {e}")
        continue
    rows.append(tiles)
    st.markdown(f"**{name}** — {note}")
    st.image(recon.compose([tiles], scale), caption=f"{name}: " + " · ".join(f"#{i}" for i in picked))
if rows:
    ui.download_png(recon.compose(rows, scale), "reconstructions", key="dl_recon")
