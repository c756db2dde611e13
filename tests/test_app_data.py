"""The explorer's data functions (app/*.py but the pages) on a fake project built in a temporary folder."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: `app` is not installed

from fixtures_app.build import build_project, exp_show, project_env  # noqa: E402

from app import curves, data, dvc, overview, provenance, recon, reports, samples  # noqa: E402


@pytest.fixture
def project(tmp_path, monkeypatch):
    build_project(tmp_path)
    for key, value in project_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    return tmp_path


def rows(project) -> dict:
    return {r["config"]: r for r in overview.overview().to_dict("records")}


def test_overview_states_say_what_is_wrong(project):
    r = rows(project)
    assert "judge" not in r  # the shared classifier is not a configuration
    assert r["vtp"]["status"] == r["ae"]["status"] == "finished"
    assert r["partial"]["status"] == "partial"
    assert "not run yet: eval, latents, dit, samples" in r["partial"]["problems"]
    assert r["running"]["status"] == "running" and "step 120/300" in r["running"]["live step"]
    assert r["failed"]["status"] == "failed" and "NonFiniteLoss" in r["failed"]["problems"]
    assert "at step 57" in r["failed"]["problems"]
    assert r["corrupt"]["status"] == "corrupt" and "JSONDecodeError" in r["corrupt"]["problems"]
    assert r["corrupt"]["objectives"] == "clip+ssl+rec"  # from params.yaml when no run.json is readable
    assert r["planned"]["status"] == "not run"


def test_overview_size_e_flops_and_metrics_as_named(project):
    r = rows(project)
    assert (r["vtp"]["E"], r["vtp"]["E (tokens x dim)"]) == (512, "16 x 32")
    assert r["big"]["E"] == 1024 and r["big"]["parameters"] == 40_000_000
    assert r["vtp"]["flops"] == 8e12 and r["vtp"]["flops_source"] == "model_total_flops"
    assert (r["ae"]["objectives"], r["ae"]["kind"], r["vtp"]["kind"]) == ("rec", "AE-only", "VTP")
    assert {"psnr", "fd_effnetlite0", "lpips_vgg", "judge_accuracy"} <= set(r["vtp"])
    assert not any("fid" in k for k in r["vtp"])  # an FD is never renamed FID


def test_finished_stage_without_its_outputs_is_partial_and_corrupt_metrics_are_named(project):
    (project / "runs" / "vtp" / "dit" / "model.safetensors").unlink()
    (project / "runs" / "ae" / "eval" / "metrics.json").write_text("{not json")
    runs = data.load_runs()
    assert runs["vtp"].stages["dit"].state == "partial" and "model.safetensors" in runs["vtp"].stages["dit"].detail
    assert runs["ae"].stages["eval"].state == "corrupt" and "metrics.json corrupt" in runs["ae"].stages["eval"].detail
    assert data.read_json(project / "nope.json") == (None, "missing")


def test_signature_changes_when_a_run_writes(project):
    before = data.signature()
    live = project / "runs" / "running" / "tokenizer" / "dvclive" / "metrics.json"
    live.write_text(json.dumps({"loss": 1.0, "step": 130}))
    assert data.signature() != before
    assert data.load_runs()["running"].stages["tokenizer"].step == 130


def test_curves_overlay_and_a_half_written_line(project):
    dirs = {n: r.dir for n, r in data.load_runs().items()}
    assert {"loss", "clip", "l1", "lr"} <= set(curves.available(dirs, "tokenizer"))
    tsv = project / "runs" / "running" / "tokenizer" / "dvclive" / "plots" / "metrics" / "loss.tsv"
    tsv.write_text(tsv.read_text() + "130\t0.5\t\t9\n140")  # a line being written as we read
    frame, notes = curves.curves(dirs, "tokenizer", "loss")
    assert set(frame["config"]) >= {"vtp", "ae", "running", "failed"}
    assert frame[frame["config"] == "running"]["step"].max() == 120
    assert any(n.startswith("corrupt:") for n in notes)


def test_dvc_without_a_repository_and_on_canned_answers(project):
    assert dvc.run_dvc(["status", "--json"], project)[1].endswith("is not a DVC repository (no .dvc/)")
    status = {"ingest": [{"changed deps": {"vtp/data": "modified"}}],
              "pretrain@ae": [{"changed deps": {"params.yaml": {"configs.ae": "modified"}}}]}
    stale = dvc.stale_by_config(status, ["ae", "vtp"])
    assert "pretrain@ae: changed deps: params.yaml (configs.ae)" in stale["ae"]
    assert "ingest" in stale["vtp"] and "pretrain@ae" not in stale["vtp"]
    frame = dvc.experiments_frame(exp_show())
    assert list(frame["kind"]) == ["workspace", "baseline", "experiment", "experiment"]
    assert dvc.varying(frame, "params:") == ["params:params.yaml:train.lr"]
    assert "metrics:runs/vtp/eval/summary.json:psnr" in dvc.varying(frame, "metrics:")
    assert dvc.experiments_frame(None).empty


def test_reports_absent_then_fits_with_intervals(project):
    assert reports.read_reports(project / "reports") == []
    (project / "reports").mkdir()
    doc = {"fits": {"vtp": {"metric": "psnr", "x": "flops", "family": "VTP", "prefactor": 2.0, "exponent": 0.05,
                            "exponent_ci": [0.01, 0.09]}}}
    (project / "reports" / "scaling.json").write_text(json.dumps(doc))
    (project / "reports" / "broken.json").write_text("{")
    found = {p.name: (d, e) for p, d, e in reports.read_reports(project / "reports")}
    assert found["broken.json"][1].startswith("corrupt")
    fits = reports.fits(found["scaling.json"][0])
    assert fits.loc[0, "exponent_ci"] == "0.01, 0.09" and fits.loc[0, "at"] == "fits.vtp"
    line = reports.fit_curve(doc["fits"]["vtp"], np.array([1e12, 1e13]))
    assert np.isclose(line["y"].iloc[-1], 2.0 * 1e13 ** 0.05)
    points, notes = reports.scaling_points(overview.overview(), "psnr", "flops")
    assert set(points["config"]) == {"vtp", "ae", "big"} and any("running" in n for n in notes)
    assert reports.loglog_slope(points[points["kind"] == "VTP"], "flops", "psnr") > 0


def test_provenance_diff_and_commands(project):
    runs = data.load_runs()
    diff = provenance.param_diff(runs["vtp"].config, runs["ae"].config, "vtp", "ae")
    assert set(diff["parameter"]) == {"loss.clip", "loss.ssl"}
    cmds = provenance.commands("vtp", "tokenizer", runs["vtp"].stages["tokenizer"].run)
    assert cmds["dvc"] == "dvc repro pretrain@vtp" and cmds["vtp"] == "vtp pretrain --config vtp"
    assert "5d93346d" in cmds["code"]
    info = provenance.summary(runs["failed"].stages["tokenizer"].run)
    assert info["status"] == "failed" and "NonFiniteLoss" in info["error"] and info["host"] == "testhost"
    assert provenance.summary(runs["vtp"].stages["eval"].run)["duration"] == "0:10:06"


def test_sample_sets_and_grids_in_class_order(project):
    sets = samples.sample_sets({n: r.dir for n, r in data.load_runs().items()})
    assert set(sets["config"]) == {"vtp", "ae", "big"}
    row = sets[sets["config"] == "vtp"].iloc[0]
    assert (row["solver"], row["steps"], row["checkpoint"]) == ("euler", 50, "final")
    assert list(samples.grids(Path(row["dir"]))) == [samples.ALL, "circle", "square", "triangle"]


def test_saved_grid_triplets_match_what_save_grid_wrote(tmp_path):
    torch = pytest.importorskip("torch")
    from vtp.eval.grids import error_map, save_grid

    g = torch.Generator().manual_seed(0)
    orig = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8, generator=g)
    rec = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8, generator=g)
    path = save_grid(orig, rec, tmp_path / "reconstruction.png")
    assert recon.grid_count(path, 16) == 8
    o, r, e = recon.grid_triplet(path, 5, 16)
    nhwc = lambda t: t.permute(1, 2, 0).numpy()  # noqa: E731
    assert (o == nhwc(orig[5])).all() and (r == nhwc(rec[5])).all()
    assert (e == nhwc(error_map(orig[5:6], rec[5:6])[0])).all()
    assert recon.compose([[o, r, e], [o]], scale=2).size == (2 * (3 * 18 + 2), 2 * (2 * 18 + 2))


def test_on_demand_reconstruction_with_a_saved_tokenizer(tmp_path):
    pytest.importorskip("torch")
    from vtp.config import load_config, to_dict
    from vtp.models.tokenizer import Tokenizer

    Tokenizer.from_spec("tiny").save_pretrained(tmp_path / "tok")
    config = to_dict(load_config("vtp", params=Path(__file__).resolve().parents[1] / "params.yaml"))  # as run.json
    images, source = recon.val_images(config, [0, 2], tmp_path)  # no shards here: the generator draws them
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8 and "synthetic generator" in source
    rec, err, scores = recon.reconstruct(recon.load_tokenizer(tmp_path / "tok"), images)
    assert rec.shape == err.shape == images.shape and scores.shape == (2,)
