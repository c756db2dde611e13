"""Door 2 end to end: the `scaling-study` flow runs the tiny study through DVC in a fresh checkout, returns paths and
metrics per configuration, publishes its artifacts, pushes to the DVC remote, and a second run finds it all done."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.testing.utilities import prefect_test_harness

from flows.study import scaling_study
from flows.workspace import dvc_bin

from dvc_utils import tiny_project

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.flows]


def tiny_checkout(root: Path, remote: Path) -> Path:
    root.mkdir()
    tiny_project(root)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    for args in (["git", "init", "-q"], [dvc_bin(), "init", "-q"], [dvc_bin(), "remote", "add", "-d", "store",
                                                                    str(remote)]):
        subprocess.run(args, cwd=root, env=env, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"], cwd=root, check=True)
    return root


async def artifacts() -> dict:
    async with get_client() as client:
        return {a.key: a for a in await client.read_artifacts()}


def test_tiny_study_through_dvc(tmp_path):
    ws = tiny_checkout(tmp_path / "ws", tmp_path / "remote")
    with prefect_test_harness(server_startup_timeout=120):
        results = scaling_study(workspaces=[str(ws)], push=True)
        by_target = {r["target"]: r for r in results}
        assert set(by_target) == {"ingest", "judge", "report"} | {
            f"{s}@{c}" for c in ("ae", "vtp")
            for s in ("pretrain", "latents", "train-dit", "sample", "evaluate-generation", "evaluate")}
        assert results[-1]["target"] == "report"  # after every configuration's chain
        assert all(r["ran"] for r in results)
        evaluate = by_target["evaluate@vtp"]
        assert {"psnr", "fd_effnetlite0"} <= evaluate["metrics"].keys()
        assert "runs/vtp/eval/summary.json" in evaluate["outputs"]
        assert by_target["sample@ae"]["metrics"]["count"] == 10
        assert all(isinstance(out, str) for r in results for out in r["outputs"])  # paths, never models
        assert any((tmp_path / "remote").rglob("*"))  # dvc push reached the remote

        found = asyncio.run(artifacts())
        table = found["scaling-study-metrics"]
        rows = json.loads(table.data) if isinstance(table.data, str) else table.data
        assert table.type == "table" and [row["config"] for row in rows] == ["ae", "vtp"]
        assert "evaluate.psnr" in rows[0] and "sample.judge_accuracy" in rows[1]
        assert str(tmp_path / "remote") in found["scaling-study-dvc-remote"].data
        assert any(k.startswith("scaling-study-grid-") for k in found)
        assert "scaling-study-report-summary" in found  # reports/summary.md as a markdown artifact

        again = scaling_study(workspaces=[str(ws)], configurations=["vtp"])  # nothing changed: DVC skips it all
        assert not any(r["ran"] for r in again)
