"""infra/ as far as it can be checked without a cluster: the Kubernetes pool's job template renders with Prefect's
own templating and maps gpu_count to nvidia.com/gpu; the compose file, the Dockerfile and the sbatch script parse."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml
from prefect.utilities.templating import apply_values
from prefect.workers.base import BaseJobConfiguration

INFRA = Path(__file__).resolve().parents[1] / "infra"
TEMPLATE = json.loads((INFRA / "k8s" / "base-job-template.json").read_text())


def container(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]["containers"][0]


def test_job_template_variables_are_a_valid_schema_with_a_gpu_count():
    schema = TEMPLATE["variables"]
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["properties"]["gpu_count"]["type"] == "integer"
    jsonschema.validate({"gpu_count": 4, "image": "vtp-worker:1"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"gpu_count": 0}, schema)  # a GPU pool: at least one


def test_every_variable_is_referenced_by_the_job_configuration():
    text = json.dumps(TEMPLATE["job_configuration"])
    unused = [name for name in TEMPLATE["variables"]["properties"] if "{{ " + name + " }}" not in text]
    assert not unused  # a variable only acts if job_configuration references it


def test_job_template_renders_the_gpu_count_into_resource_limits():
    rendered = apply_values(TEMPLATE["job_configuration"], {"gpu_count": 4, "image": "vtp-worker:1",
                                                            "cpu_threads": "12", "shm_size": "32Gi"})
    c = container(rendered["job_manifest"])
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 4 and c["resources"]["requests"]["nvidia.com/gpu"] == 4
    assert {"name": "VTP_NPROC", "value": "gpu"} in c["env"]  # torchrun: one worker per GPU given
    assert {"name": "OMP_NUM_THREADS", "value": "12"} in c["env"]
    assert c["image"] == "vtp-worker:1"


def test_worker_defaults_render_a_job_manifest():
    # The worker's own steps (BaseJobConfiguration.from_template_and_values, less the server round trip for
    # block and variable references, of which this template has none): variable defaults, then apply_values.
    defaults = BaseJobConfiguration._get_base_config_defaults(TEMPLATE["variables"]["properties"])
    rendered = apply_values(TEMPLATE["job_configuration"], {**defaults, "gpu_count": 2})
    manifest = rendered["job_manifest"]
    assert "{{" not in json.dumps(rendered)  # every placeholder filled or removed
    assert container(manifest)["resources"]["limits"]["nvidia.com/gpu"] == 2
    spec = manifest["spec"]["template"]["spec"]
    assert spec["volumes"][0]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    assert manifest["kind"] == "Job" and spec["restartPolicy"] == "Never"
    assert BaseJobConfiguration(**rendered).command is None  # the worker fills in the flow-run command


def test_kubernetes_worker_accepts_the_template():
    worker = pytest.importorskip("prefect_kubernetes.worker")  # installed on a cluster's worker, not here
    defaults = BaseJobConfiguration._get_base_config_defaults(TEMPLATE["variables"]["properties"])
    cfg = worker.KubernetesWorkerJobConfiguration(**apply_values(TEMPLATE["job_configuration"],
                                                                 {**defaults, "gpu_count": 8}))
    assert container(cfg.job_manifest)["resources"]["limits"]["nvidia.com/gpu"] == 8


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """A small Dockerfile reader: comments dropped, continuation lines joined, (INSTRUCTION, arguments)."""
    out, pending = [], ""
    for line in text.splitlines():
        if line.strip().startswith("#") and not pending:
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        if pending.strip():
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def test_dockerfile_parses_and_runs_a_worker_on_cuda():
    ops = dockerfile_instructions((INFRA / "docker" / "Dockerfile").read_text())
    known = {"FROM", "ENV", "RUN", "WORKDIR", "COPY", "USER", "ENTRYPOINT", "CMD", "ARG", "LABEL", "EXPOSE"}
    assert {op for op, _ in ops} <= known and ops[0][0] == "FROM" and "nvidia/cuda" in ops[0][1]
    for op, args in ops:
        if op in {"CMD", "ENTRYPOINT"}:
            assert isinstance(json.loads(args), list)  # exec form: signals reach the process
    cmd = json.loads(dict(ops)["CMD"])
    assert cmd[:3] == ["prefect", "worker", "start"]


def test_compose_file_has_server_worker_and_minio_bound_to_localhost():
    compose = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"prefect-server", "worker", "minio"} <= services.keys()
    for service in services.values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:")
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    assert services["worker"]["environment"]["PREFECT_API_URL"].startswith("http://prefect-server:4200")


def test_sbatch_example_is_valid_bash_running_torchrun_across_nodes():
    script = INFRA / "slurm" / "pretrain.sbatch"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "#SBATCH --nodes=" in text and "torchrun" in text and "--rdzv-backend c10d" in text
    assert "dvc commit" in text and "dvc push" in text
