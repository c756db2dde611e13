"""Streamlit glue shared by the pages: caches keyed on file modification times or the DVC revision, the run
picker that remembers the overview's selection, status labels and download buttons."""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import streamlit as st

from app import data, dvc, overview

# Streamlit's coloured markdown rather than emoji: a browser without an emoji font shows these too
COLORS = {"finished": "green", "running": "blue", "failed": "red", "interrupted": "orange", "partial": "orange",
          "corrupt": "red", "not run": "gray"}
SELECTED = "selected_runs"  # session key: the overview's multi-row selection, the other pages' default


def page(title: str, caption: str | None = None) -> None:
    st.set_page_config(page_title=f"vtp · {title}", layout="wide")
    st.title(title)
    if caption:
        st.caption(caption)


# -- caches: the key is the signature, so a run that writes a file invalidates them ------------------------------
@st.cache_data(show_spinner=False)
def _overview(root: str, params: str, stamp: tuple) -> pd.DataFrame:
    return overview.overview(Path(root), Path(params))


def overview_frame() -> pd.DataFrame:
    root, params = data.runs_root(), data.project_root() / "params.yaml"
    stamp = data.signature(root, (params,))
    return _overview(str(root), str(params), stamp)


@st.cache_data(show_spinner=False)
def _runs(root: str, stamp: tuple) -> dict[str, data.Run]:
    return data.load_runs(Path(root))


def runs() -> dict[str, data.Run]:
    root = data.runs_root()
    return _runs(str(root), data.signature(root))


@st.cache_data(show_spinner="dvc status …", ttl=600)
def _dvc_json(args: tuple[str, ...], project: str, revision: tuple):
    return dvc.run_dvc(list(args), Path(project))


def dvc_json(*args: str):
    """(json, error) of a read-only dvc command, cached per DVC revision (lock, params, git refs)."""
    project = data.project_root()
    return _dvc_json(tuple(args), str(project), dvc.revision(project))


# -- widgets -------------------------------------------------------------------------------------------------------
def label(state: str) -> str:
    """Markdown: the state in its colour (for tables use the plain state)."""
    return f":{COLORS.get(state, 'gray')}[{state}]"


def pick_runs(options: list[str], key: str, max_default: int = 4, text: str = "Configurations") -> list[str]:
    """A multiselect whose default is the overview's selection (else the first few finished ones)."""
    chosen = [r for r in st.session_state.get(SELECTED, []) if r in options]
    return st.multiselect(text, options, default=chosen or options[:max_default], key=key)


def no_runs_message() -> None:
    st.info(f"No runs under `{data.runs_root()}` yet (set VTP_RUNS_ROOT to look elsewhere). "
            "`make demo` or `dvc repro` creates them.")


def download_csv(df: pd.DataFrame, name: str, key: str) -> None:
    st.download_button(f"Download {name}.csv", df.to_csv(index=False).encode(), f"{name}.csv", "text/csv", key=key)


def download_png(image, name: str, key: str) -> None:
    """`image`: a PIL image or a PNG file path."""
    if isinstance(image, (str, Path)):
        payload = Path(image).read_bytes()
    else:
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        payload = buf.getvalue()
    st.download_button(f"Download {name}.png", payload, f"{name}.png", "image/png", key=key)


def show_states(run: data.Run) -> None:
    """One line per stage: its state and what is wrong or missing."""
    for folder, s in run.stages.items():
        st.markdown(f"- **{folder}** ({data.STAGES[folder]}): {label(s.state)} — {s.detail}")
