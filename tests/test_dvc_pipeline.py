"""Door 1 end to end: `dvc repro` of the repository's dvc.yaml on tiny parameters ingests, pre-trains and
evaluates every configuration, and `dvc metrics show` compares them."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from dvc_utils import run, tiny_project


def test_dvc_repro_runs_every_configuration(tmp_path):
    tiny_project(tmp_path)
    dvc = [str(Path(sys.executable).parent / "dvc")]
    run(["git", "init", "-q"], tmp_path)
    run([*dvc, "init", "-q"], tmp_path)
    run(["git", "add", "-A"], tmp_path)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny study"], tmp_path)
    run([*dvc, "repro"], tmp_path)
    for cfg in ("ae", "vtp"):
        assert (tmp_path / "runs" / cfg / "tokenizer" / "model.safetensors").exists()
        summary = json.loads((tmp_path / "runs" / cfg / "eval" / "summary.json").read_text())
        assert {"psnr", "fd_effnetlite0", "probe_bottleneck_top1"} <= summary.keys()
        samples = json.loads((tmp_path / "runs" / cfg / "samples" / "metrics.json").read_text())
        assert samples["count"] == 10 and samples["judge_accuracy"] is not None
        generation = json.loads((tmp_path / "runs" / cfg / "generation" / "summary.json").read_text())
        assert {"fd_effnetlite0", "kid_effnetlite0", "is_effnetlite0"} <= generation.keys()
        curve = json.loads((tmp_path / "runs" / cfg / "generation" / "convergence.json").read_text())
        assert [p["step"] for p in curve["points"]] == [2, 3]
    shown = json.loads(run([*dvc, "metrics", "show", "--json"], tmp_path))
    files = next(iter(shown.values()))["data"]
    assert {"runs/ae/eval/summary.json", "runs/vtp/eval/summary.json", "runs/vtp/dit/metrics.json",
            "runs/vtp/samples/metrics.json"} <= files.keys()
    assert "# Scaling report" in (tmp_path / "reports" / "summary.md").read_text()
    assert "up to date" in run([*dvc, "status"], tmp_path)
    run(["git", "add", "dvc.lock"], tmp_path)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline results"], tmp_path)

    # An experiment as a new user runs one: its metrics and the baseline's are read back from the DVC cache.
    run([*dvc, "exp", "run", "-S", "eval.probe_epochs=1", "-n", "probe1"], tmp_path)
    (baseline,) = [r for r in json.loads(run([*dvc, "exp", "show", "--json"], tmp_path)) if r["rev"] != "workspace"]
    (experiment,) = baseline["experiments"][0]["revs"]
    for row in (baseline, experiment):
        metrics = row["data"]["metrics"]
        assert {f"runs/{c}/{f}" for c in ("ae", "vtp") for f in ("eval/summary.json", "generation/summary.json",
                                                                 "tokenizer/metrics.json")} <= metrics.keys()
        assert all(m.get("data") for m in metrics.values()), "a metric the DVC cache could not read"
    assert experiment["data"]["params"]["params.yaml"]["data"]["eval"]["probe_epochs"] == 1
    run(["git", "checkout", "-q", "--", "params.yaml", "dvc.lock"], tmp_path)
    run([*dvc, "checkout", "-q"], tmp_path)  # back to the baseline's outputs

    # A DiT parameter re-runs the DiT and what reads it, never a tokenizer.
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["dit"]["steps"] = 4
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    ran = {line.split("'")[1] for line in run([*dvc, "repro"], tmp_path).splitlines()
           if line.startswith("Running stage")}
    assert ran == {f"{s}@{c}" for s in ("train-dit", "sample", "evaluate-generation") for c in ("ae", "vtp")} | {
        "report"}

    # The remote round trip: push, lose the outputs, pull them back byte for byte.
    run([*dvc, "remote", "add", "-d", "store", str(tmp_path.parent / f"{tmp_path.name}-remote")], tmp_path)
    run([*dvc, "push"], tmp_path)
    tracked = [tmp_path / p for p in ("runs/vtp/tokenizer/model.safetensors", "runs/ae/dit/model.safetensors",
                                      "runs/vtp/samples/samples.npz", "reports/summary.md")]
    before = {p: p.read_bytes() for p in tracked}
    for p in tracked:
        p.unlink()
    run([*dvc, "pull"], tmp_path)
    assert {p: p.read_bytes() for p in tracked} == before
    assert "up to date" in run([*dvc, "status"], tmp_path)
