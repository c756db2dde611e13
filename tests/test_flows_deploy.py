"""prefect.yaml's deployments load with `prefect deploy` itself: schedules, concurrency limits, pinned pull steps."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.settings import PREFECT_API_URL
from prefect.testing.utilities import prefect_test_harness

pytestmark = pytest.mark.flows

REPO = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def api_url():
    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


async def deployments_after_deploy(api_url: str) -> dict:
    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(name="vtp-local", type="process"))
        env = {**os.environ, "PREFECT_API_URL": api_url, "VTP_REPOSITORY": str(REPO), "VTP_COMMIT": COMMIT,
               "VTP_WORK_POOL": "vtp-local", "VTP_WORKDIR": "/srv/vtp"}
        prefect = str(Path(sys.executable).parent / "prefect")
        done = subprocess.run([prefect, "--no-prompt", "deploy", "--all"], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return {d.name: d for d in await client.read_deployments()}


def test_prefect_yaml_deploys_with_schedules_and_limits(api_url):
    found = asyncio.run(deployments_after_deploy(api_url))
    assert set(found) == {"scaling-study", "nightly-eval", "ingest"}
    crons = {name: [s.schedule.cron for s in d.schedules] for name, d in found.items()}
    assert crons == {"scaling-study": [], "nightly-eval": ["0 2 * * *"], "ingest": ["0 1 * * 0"]}
    assert found["nightly-eval"].schedules[0].parameters == {"sync": True}
    for d in found.values():
        assert d.work_pool_name == "vtp-local" and d.job_variables == {"working_dir": "/srv/vtp"}
        assert d.global_concurrency_limit.limit == 1  # one run per deployment at a time: schedules never overlap
        clone = d.pull_steps[0]["prefect.deployments.steps.git_clone"]
        assert clone == {"id": "clone", "repository": str(REPO), "commit_sha": COMMIT}
        assert "dvc pull" in d.pull_steps[2]["prefect.deployments.steps.run_shell_script"]["script"]
    study = found["scaling-study"]
    assert study.parameters == {"configurations": None, "push": True}
    assert {"configurations", "stages", "workspaces", "nproc"} <= study.parameter_openapi_schema["properties"].keys()
    assert found["scaling-study"].concurrency_options.collision_strategy == "ENQUEUE"


def test_prefect_yaml_names_the_entrypoints_that_exist():
    config = yaml.safe_load((REPO / "prefect.yaml").read_text())
    for d in config["deployments"]:
        path, _, name = d["entrypoint"].partition(":")
        assert f"def {name}(" in (REPO / path).read_text()
