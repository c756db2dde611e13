"""vtp.report: collect (missing / corrupt files), fits (exact power laws, scipy reference, bootstrap coverage),
claim verdicts and the reports/ files, on fake runs/ trees written here."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from vtp.report import claims as C
from vtp.report import plots
from vtp.report.build import run_report
from vtp.report.collect import collect, collect_row
from vtp.report.fits import fit_all, log_linear, power_law

FLOPS = [1e12, 3e12, 1e13, 3e13]
DIMS = [8, 16, 32, 64]  # E = 16 tokens (32 px / patch 8) x dim
WOBBLE = [1.02, 0.98, 1.01, 0.99]  # fixed "noise" so the verdicts are deterministic


def _json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def write_run(runs: Path, name: str, objectives, flops: float | None, dim: int = 32, ev: dict | None = None,
              gen: dict | None = None, convergence=None, equal_with: str | None = None, steps: int = 300) -> Path:
    d = runs / name
    config = {"name": name, "data": {"resolution": 32}, "model": {"size": "vtp-cpu-s", "bottleneck_dim": dim},
              "loss": {k: k in objectives for k in ("clip", "ssl", "rec")},
              "train": {"steps": steps, "equal_compute_with": equal_with}}
    _json(d / "tokenizer" / "run.json", {"stage": "pretrain", "status": "ok", "config": config})
    _json(d / "tokenizer" / "config.json", {"format": "vtp-tokenizer", "spec": {
        "name": "vtp-cpu-s", "encoder": {"width": 192, "depth": 4}, "patch": 8, "bottleneck_dim": dim,
        "text": {"width": 128}}})
    _json(d / "tokenizer" / "metrics.json", {"step": 300, "wall_s": 12.5, "model_total_flops": flops, "loss": 0.4,
                                             "flops_convention": "2 x MACs"})
    if ev is not None:
        _json(d / "eval" / "summary.json", ev)
    if gen is not None:
        _json(d / "generation" / "summary.json", gen)
        _json(d / "generation" / "metrics.json", {"convergence": convergence or []})
    return d


def _rec(dim: int, w: float) -> dict:
    lnE = math.log(16 * dim)
    return {"psnr": (15 + 2 * lnE) * w ** 0.1, "lpips_vgg": (0.9 - 0.1 * lnE) * w,
            "fd_effnetlite0": math.exp(8 - 0.5 * lnE) * w, "ssim": 0.05 * lnE * w ** 0.1}


def study(runs: Path, vtp_gen_exponent: float = -0.3) -> list[str]:
    """4 VTP and 4 AE budgets at E = 512: VTP's gFD falls as a power law in FLOPs, AE's stays flat; every AE run is
    tied to a VTP run at equal compute. Beside them, ViTok's sweep of the AE at vtp1's compute over E = 128..1024,
    with PSNR / LPIPS / rFD following ln E."""
    names = []
    for i, (f, w) in enumerate(zip(FLOPS, WOBBLE)):
        r = f / 1e12
        write_run(runs, f"vtp{i}", ("clip", "ssl", "rec"), f, 32,
                  {**_rec(32, w), "zeroshot_top1": 0.1 * r ** 0.2 * w, "probe_bottleneck_top1": 0.12 * r ** 0.15 * w},
                  {"fd_effnetlite0": 200 * r ** vtp_gen_exponent * w, "judge_accuracy": 0.5},
                  [{"step": 100, "fd_effnetlite0": 300.0}, {"step": 400, "fd_effnetlite0": 250.0}], steps=300 * 2 ** i)
        write_run(runs, f"ae{i}", ("rec",), f * 1.005, 32, {**_rec(32, w), "probe_bottleneck_top1": 0.1},
                  {"fd_effnetlite0": 300 * WOBBLE[(i + 1) % 4] ** 3}, equal_with=f"vtp{i}")
        names += [f"vtp{i}", f"ae{i}"]
    for dim, w in zip(DIMS, WOBBLE):
        if dim != 32:  # ae1 is the sweep's E = 512 point
            write_run(runs, f"ae1-d{dim}", ("rec",), FLOPS[1] * 1.004, dim, _rec(dim, w), {"fd_effnetlite0": 320.0},
                      equal_with="vtp1")
            names.append(f"ae1-d{dim}")
    return names


# --- fits -----------------------------------------------------------------------------------------------------


def test_power_law_recovers_an_exact_law():
    x = np.geomspace(1e12, 1e17, 7)
    fit = power_law(x, 3.7 * x ** -0.31)
    assert fit["exponent"] == pytest.approx(-0.31, abs=1e-6)
    assert fit["prefactor"] == pytest.approx(3.7, rel=1e-6)
    assert fit["r2"] == pytest.approx(1.0, abs=1e-9)
    lo, hi = fit["exponent_ci"]  # every resample lies on the same line
    assert lo == pytest.approx(-0.31, abs=1e-6) and hi == pytest.approx(-0.31, abs=1e-6)
    assert fit["bootstrap"] == {"resamples": 1000, "usable": fit["bootstrap"]["usable"], "level": 0.95, "seed": 0}
    assert 950 <= fit["bootstrap"]["usable"] <= 1000


def test_least_squares_matches_scipy_linregress():
    rng = np.random.default_rng(1)
    x = np.geomspace(1e10, 1e14, 9)
    y = 50 * x ** 0.2 * np.exp(rng.normal(0, 0.1, x.size))
    ref = stats.linregress(np.log(x), np.log(y))
    fit = power_law(x, y)
    assert fit["exponent"] == pytest.approx(ref.slope, rel=1e-9)
    assert math.log(fit["prefactor"]) == pytest.approx(ref.intercept, rel=1e-9)
    assert fit["r2"] == pytest.approx(ref.rvalue ** 2, rel=1e-9)
    E = np.array([256, 512, 1024, 2048, 4096.0])
    psnr = 12 + 1.5 * np.log(E) + rng.normal(0, 0.2, E.size)
    lin, ref = log_linear(E, psnr), stats.linregress(np.log(E), psnr)
    assert (lin["slope"], lin["intercept"]) == (pytest.approx(ref.slope), pytest.approx(ref.intercept))
    assert lin["r2"] == pytest.approx(ref.rvalue ** 2) and lin["slope_ci"][0] < ref.slope < lin["slope_ci"][1]


def test_bootstrap_interval_covers_the_true_exponent_on_noisy_data():
    x, covered, seen = np.geomspace(1e12, 1e16, 12), 0, 20
    for seed in range(seen):
        y = 2.0 * x ** -0.25 * np.exp(np.random.default_rng(seed).normal(0, 0.1, x.size))
        lo, hi = power_law(x, y, seed=seed)["exponent_ci"]
        assert lo < hi
        covered += lo <= -0.25 <= hi
    assert covered >= 16  # nominal 95%; the percentile bootstrap runs a little narrow at n = 12


def test_too_few_points_and_degenerate_data_say_why():
    two = power_law([1e12, 1e13], [10.0, 5.0])
    assert two["exponent"] == pytest.approx(math.log10(0.5)) and two["exponent_ci"] is None
    assert "2 points" in two["note"] and two["bootstrap"] is None
    one = power_law([1e12], [3.0])
    assert one["exponent"] is None and "no fit" in one["note"]
    same = power_law([1e12] * 3, [1.0, 2.0, 3.0])
    assert same["exponent"] is None and "share one x" in same["note"]
    neg = power_law([1e12, 1e13, 1e14, 1e15], [1.0, 0.0, 2.0, 3.0])
    assert neg["n"] == 3 and "non-positive" in neg["note"]
    lumpy = power_law([1e12, 1e12, 1e13], [1.0, 1.1, 2.0])  # 2 distinct x: many resamples have one x only
    assert lumpy["bootstrap"]["usable"] < 1000 and "2 distinct x" in lumpy["note"]


# --- collect --------------------------------------------------------------------------------------------------


def test_collect_reads_every_part(tmp_path):
    write_run(tmp_path, "vtp", ("clip", "ssl", "rec"), 8e12, 32, {"psnr": 20.0, "zeroshot_top1": 0.3, "x": "s"},
              {"fd_effnetlite0": 90.0}, [{"step": 100, "fd_effnetlite0": 120.0}], equal_with=None)
    r = collect_row(tmp_path, "vtp")
    assert r["objectives"] == "clip+ssl+rec" and r["kind"] == "VTP" and r["state"] == "complete"
    assert (r["tokens"], r["bottleneck_dim"], r["E"]) == (16, 32, 512)
    assert r["model_total_flops"] == 8e12 and r["steps"] == 300 and r["pretrain.loss"] == 0.4
    assert r["eval.psnr"] == 20.0 and "eval.x" not in r and r["generation.fd_effnetlite0"] == 90.0
    assert r["convergence"] == [{"step": 100, "fd_effnetlite0": 120.0}]
    write_run(tmp_path, "ae", ("rec",), 8e12)
    assert collect_row(tmp_path, "ae")["kind"] == "AE-only"


def test_collect_missing_and_corrupt_files_never_raise(tmp_path):
    runs = tmp_path / "runs"
    d = write_run(runs, "half", ("rec",), 1e12, ev={"psnr": float("nan"), "ssim": 0.5})
    (d / "generation").mkdir()
    (d / "generation" / "summary.json").write_text("{not json")
    (d / "tokenizer" / "config.json").write_text("[1, 2]")
    params = tmp_path / "params.yaml"
    params.write_text("data: {resolution: 64}\nmodel: {patch: 8, bottleneck_dim: 4}\nloss: {clip: true}\n"
                      "configs:\n  half: {}\n  planned: {loss: {ssl: true}}\n")
    half, planned = collect([], runs, params)
    assert half["status"]["eval"] == "ok" and "eval.psnr" not in half and half["eval.ssim"] == 0.5
    assert half["status"]["generation"] == f"corrupt: {d / 'generation' / 'summary.json'}"
    assert any("generation/summary.json" in n and "JSONDecodeError" in n for n in half["notes"])
    assert half["status"]["tokenizer"].startswith("corrupt:") and half["state"] == "partial"
    assert half["E"] == 16 * 32  # no readable spec: the run's bottleneck_dim, the size registry's patch (8)
    assert planned["status"]["run"] == f"missing: {runs / 'planned' / 'tokenizer' / 'run.json'}"
    assert planned["objectives"] == "clip+ssl" and planned["E"] == 64 * 4 and planned["model_total_flops"] is None
    assert any("params.yaml" in n for n in planned["notes"])


# --- claims and the report ------------------------------------------------------------------------------------


def _verdicts(claims):
    return {c["id"]: c["verdict"] for c in claims}


def test_report_on_a_study_where_every_claim_holds(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "pyplot", lambda: None)  # the matplotlib-free path (PNGs tested below)
    names = study(tmp_path / "runs")
    doc = run_report(names, tmp_path / "runs", tmp_path / "reports", tmp_path / "none.yaml", resamples=500)
    assert _verdicts(doc["claims"]) == {k: C.HOLDS for k in (
        "vtp.generation_scales", "vtp.ae_stalls", "vtp.equal_compute", "vtp.understanding_scales",
        "vitok.e_predicts_reconstruction")}
    gen = C.find(doc["fits"], "generation.fd_effnetlite0", "clip+ssl+rec", "model_total_flops")
    assert gen["exponent"] == pytest.approx(-0.3, abs=0.02) and gen["exponent_ci"][1] < 0
    assert gen["configs"] == ["vtp0", "vtp1", "vtp2", "vtp3"] and gen["bootstrap"]["resamples"] == 500
    ae = C.find(doc["fits"], "generation.fd_effnetlite0", "rec, E=512", "model_total_flops")
    assert ae["configs"] == ["ae0", "ae1", "ae2", "ae3"]  # the budget line, not the E sweep's points
    e_fit = C.find(doc["fits"], "eval.psnr", "rec @ ae1", "E")
    assert e_fit["configs"] == ["ae1", "ae1-d8", "ae1-d16", "ae1-d64"] and e_fit["slope"] == pytest.approx(2, abs=.1)
    rep = tmp_path / "reports"
    for name in ("table.csv", "table.md", "fits.json", "summary.md"):
        assert (rep / name).exists()
    on_disk = json.loads((rep / "fits.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert on_disk["schema"] == "vtp.report/1" and len(on_disk["points"]) == 11
    assert on_disk["skipped"]["plots"].startswith("matplotlib is not installed") and not list(rep.glob("*.png"))
    summary = (rep / "summary.md").read_text()
    assert summary == doc["summary_md"] and "HOLDS AT THIS SCALE" in summary and "95% CI [" in summary
    assert (rep / "table.csv").read_text().splitlines()[0].startswith("config,objectives,kind,state")
    from app.reports import fits as app_fits  # the explorer reads the same file

    shown = app_fits(on_disk)
    assert {"metric", "exponent", "prefactor", "exponent_ci"} <= set(shown.columns) and len(shown) == len(doc["fits"])


def test_claims_that_fail_or_cannot_be_tested(tmp_path):
    names = study(tmp_path / "runs", vtp_gen_exponent=+0.3)  # VTP's generation gets worse with compute
    rows = collect(names, tmp_path / "runs", tmp_path / "none.yaml")
    v = _verdicts(C.check_claims(rows, fit_all(rows, resamples=200)))
    assert v["vtp.generation_scales"] == C.FAILS and v["vtp.equal_compute"] == C.FAILS  # vtp3 ends above ae3
    # one budget per objective, one E, no generation: nothing about scaling can be tested
    runs = tmp_path / "small"
    write_run(runs, "vtp", ("clip", "ssl", "rec"), 1e12, ev={"psnr": 20.0, "zeroshot_top1": 0.2})
    write_run(runs, "ae", ("rec",), 1e12, ev={"psnr": 22.0}, equal_with="vtp")
    rows = collect(["vtp", "ae"], runs, tmp_path / "none.yaml")
    claims = C.check_claims(rows, fit_all(rows, resamples=100))
    assert set(_verdicts(claims).values()) == {C.UNTESTABLE}
    why = {c["id"]: c["reason"] for c in claims}
    assert "no generation metrics" in why["vtp.generation_scales"] and "no E sweep" in why[
        "vitok.e_predicts_reconstruction"] and "1 point" in why["vtp.understanding_scales"]


def test_e_fit_pools_only_configurations_that_differ_in_e(tmp_path):
    """The laptop study's shape: an AE E sweep at one budget (steps derived from equal compute, so they differ
    along the sweep) beside AE and VTP runs at other budgets. PSNR follows ln E within the sweep; the other
    budgets' PSNRs differ for other reasons, and pooling them (as the report once did) hides the law."""
    runs, names = tmp_path / "runs", []
    for i, dim in enumerate(DIMS):  # the sweep: PSNR = 12 + 2 ln E, steps 380..395 from equal compute
        lnE = math.log(16 * dim)
        write_run(runs, f"ae-s300-d{dim}", ("rec",), 1e12, dim, {"psnr": (12 + 2 * lnE) * WOBBLE[i] ** 0.1},
                  equal_with="vtp-s300", steps=380 + 5 * i)
        names.append(f"ae-s300-d{dim}")
    for steps, psnr in ((150, 30.0), (600, 14.0)):
        write_run(runs, f"ae-s{steps}", ("rec",), 1e12, 32, {"psnr": psnr}, equal_with=f"vtp-s{steps}")
        names.append(f"ae-s{steps}")
    for steps, psnr in ((150, 9.0), (300, 31.0), (600, 11.0)):
        write_run(runs, f"vtp-s{steps}", ("clip", "ssl", "rec"), 1e12, 8 if steps == 300 else 64, {"psnr": psnr},
                  steps=steps)
        names.append(f"vtp-s{steps}")
    rows = collect(names, runs, tmp_path / "none.yaml")
    fits = [f for f in fit_all(rows, resamples=200) if f["x"] == "E"]
    assert [(f["group"], f["configs"]) for f in fits] == [("rec @ ae-s300-d8", names[:4])]
    assert fits[0]["slope"] == pytest.approx(2.0, abs=0.1) and fits[0]["r2"] > 0.95
    pooled = log_linear([r["E"] for r in rows], [r["eval.psnr"] for r in rows])
    assert pooled["r2"] < 0.3  # what the pooled fit said of the same runs
    claim = C.e_predicts_reconstruction(rows, fit_all(rows, resamples=200))
    assert claim["verdict"] == C.HOLDS and "rec @ ae-s300-d8" in claim["evidence"][0]


def test_png_plots_when_matplotlib_is_installed(tmp_path):
    pytest.importorskip("matplotlib")
    names = study(tmp_path / "runs")
    doc = run_report(names, tmp_path / "runs", tmp_path / "reports", tmp_path / "none.yaml", resamples=100)
    for name in ("generation.fd_effnetlite0_vs_flops.png", "eval.psnr_vs_flops.png", "convergence.png"):
        assert name in doc["plots"] and (tmp_path / "reports" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
