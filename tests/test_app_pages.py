"""Every explorer page under Streamlit's AppTest, on a fake project with finished, partial, running, failed and
corrupt runs: no exception, and the content says what each run is."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: `app` is not installed

import streamlit as st  # noqa: E402
from fixtures_app.build import build_project, exp_show, project_env  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from app import dvc  # noqa: E402

APP = Path(__file__).resolve().parents[1] / "app"
PAGES = ["Home.py"] + sorted(f"pages/{p.name}" for p in (APP / "pages").glob("*.py"))


@pytest.fixture
def project(tmp_path, monkeypatch):
    build_project(tmp_path)
    for key, value in project_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    st.cache_data.clear()  # the dvc answers are cached per project revision; monkeypatched ones must not linger
    return tmp_path


def run(page: str, selected: list[str] | None = None) -> AppTest:
    at = AppTest.from_file(str(APP / page), default_timeout=120)
    if selected is not None:
        at.session_state["selected_runs"] = selected
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def text(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "warning", "error", "success", "title")
             for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders(project, page):
    assert run(page).title


def test_every_page_with_no_runs_at_all(tmp_path, monkeypatch):
    monkeypatch.setenv("VTP_RUNS_ROOT", str(tmp_path / "nothing"))
    monkeypatch.setenv("VTP_PROJECT_ROOT", str(tmp_path))
    for page in PAGES:
        run(page)


def test_runs_overview_shows_every_state(project):
    at = run("pages/1_Runs.py")
    df = at.dataframe[0].value.set_index("config")
    assert {"vtp", "ae", "big", "partial", "running", "failed", "corrupt", "planned"} == set(df.index)
    assert df.loc["running", "status"].endswith("running") and "step 120/300" in df.loc["running", "live step"]
    assert "NonFiniteLoss" in df.loc["failed", "problems"] and "JSONDecodeError" in df.loc["corrupt", "problems"]
    assert df.loc["vtp", "E (tokens x dim)"] == "16 x 32" and df.loc["vtp", "flops"] == 8e12
    assert "not a DVC repository" in text(at)  # staleness: said why it was not checked
    assert at.multiselect(key="f_status").options


def test_runs_overview_filters_and_stale_from_dvc(project, monkeypatch):
    status = {"pretrain@vtp": [{"changed deps": {"vtp/train": "modified"}}]}
    monkeypatch.setattr(dvc, "run_dvc", lambda args, project: (status, None))
    at = run("pages/1_Runs.py", selected=["failed"])
    df = at.dataframe[0].value.set_index("config")
    assert df.loc["vtp", "stale"] == "stale: pretrain@vtp" and df.loc["ae", "stale"] == "up to date"
    assert "NonFiniteLoss" in text(at)  # the selected run's stage details
    at = run("pages/1_Runs.py", selected=["vtp"])
    assert "pretrain@vtp: changed deps: vtp/train" in text(at)
    at.multiselect(key="f_status").select("failed").run()
    assert list(at.dataframe[0].value["config"]) == ["failed"]


def test_reconstructions_saved_grids_and_what_is_missing(project):
    at = run("pages/2_Reconstructions.py")
    body = text(at)
    assert "**vtp** — saved by vtp evaluate" in body and "partial: not shown" in body
    assert len(at.get("image")) == 3  # vtp, ae, big: the configurations with saved grids
    assert any("reconstructions.png" in str(b.proto) for b in at.get("download_button"))


def test_reconstructions_on_demand_with_a_real_tokenizer(project):
    pytest.importorskip("torch")
    from vtp.models.tokenizer import Tokenizer

    Tokenizer.from_spec("tiny").save_pretrained(project / "runs" / "vtp" / "tokenizer")
    # a complete resolved configuration, as run.json holds it (the fake one is abridged)
    from vtp.config import load_config, to_dict

    cfg = to_dict(load_config("vtp", params=Path(__file__).resolve().parents[1] / "params.yaml"))
    for stage in ("tokenizer", "eval", "latents", "dit", "samples"):
        p = project / "runs" / "vtp" / stage / "run.json"
        p.write_text(json.dumps({**json.loads(p.read_text()), "config": cfg}))
    at = run("pages/2_Reconstructions.py", selected=["vtp"])
    at.radio(key="source").set_value("reconstruct now with the saved tokenizer").run()
    at.multiselect(key="recon_images").set_value([0, 1]).run()
    at.button(key="go").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert "synthetic generator" in text(at) and "PSNR" in text(at)


def test_samples_page(project):
    at = run("pages/3_Samples.py", selected=["vtp", "ae"])
    body = text(at)
    assert "euler 50 steps" in body and "judge_accuracy" in body and "partial (sample: not run)" in body
    at.selectbox(key="cls").set_value("circle").run()
    assert not at.exception and "vtp: circle" in str([i.proto for i in at.get("image")])


def test_training_curves_overlay(project):
    at = run("pages/4_Training_curves.py", selected=["vtp", "running", "failed"])
    assert at.get("vega_lite_chart") and "running — step 120/300" in text(at)
    assert "corrupt: no tokenizer dvclive curves" in text(at)
    at.radio(key="stage").set_value("dit").run()
    assert not at.exception


def test_scaling_without_then_with_a_report(project):
    at = run("pages/5_Scaling.py")
    assert "No report yet" in text(at) and at.get("vega_lite_chart")
    (project / "reports").mkdir()
    fit = {"metric": "psnr", "x": "flops", "family": "VTP", "prefactor": 2.0, "exponent": 0.05,
           "exponent_ci": [0.01, 0.09]}
    (project / "reports" / "scaling.json").write_text(json.dumps({"fits": [fit]}))
    at = run("pages/5_Scaling.py")
    assert "scaling.json**: 1 fit(s)" in text(at)
    assert any("0.01, 0.09" in str(df.value.to_dict()) for df in at.dataframe)


def test_compare_two_runs_with_param_diff(project):
    at = run("pages/6_Compare.py", selected=["vtp", "ae"])
    diff = at.dataframe[1].value
    assert set(diff["parameter"]) == {"loss.clip", "loss.ssl"}
    at.selectbox(key="run_b").set_value("corrupt").run()
    assert not at.exception and "no recorded parameters: corrupt" in text(at)


def test_provenance_and_reproduce_command(project):
    at = run("pages/7_Provenance.py", selected=["vtp"])
    codes = [c.value for c in at.code]
    assert "dvc repro pretrain@vtp" in codes and "vtp pretrain --config vtp" in codes
    assert "5d93346d" in str(at.table[0].value.to_dict())
    at.selectbox(key="prov_run").set_value("failed").run()
    assert "NonFiniteLoss" in text(at)
    at.selectbox(key="prov_run").set_value("corrupt").run()
    assert "No readable run.json" in text(at)


def test_experiments_page_without_and_with_dvc(project, monkeypatch):
    assert "No DVC experiments to show" in text(run("pages/8_Experiments.py"))
    st.cache_data.clear()
    monkeypatch.setattr(dvc, "run_dvc", lambda args, project: (exp_show(), None))
    at = run("pages/8_Experiments.py")
    df = at.dataframe[0].value
    assert list(df["name"])[-2:] == ["exp-lr2", "exp-lr5"] and "params:params.yaml:train.lr" in df.columns
    assert "2 experiment(s)" in text(at)
