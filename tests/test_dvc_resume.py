"""Door 1 under failure: a `dvc repro` killed mid-training resumes where it stopped (finished stages are not re-run,
the interrupted training continues from its checkpoint), and under `dvc repro -k` one failing configuration costs
nobody else's outputs. The training-level resume (bitwise equal weights) is tests/test_train_kill_resume.py's."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from dvc_utils import run, tiny_project

DVC = str(Path(sys.executable).parent / "dvc")


def project(root: Path, configs: dict) -> None:
    tiny_project(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["configs"] = configs
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    run(["git", "init", "-q"], root)
    run([DVC, "init", "-q"], root)
    run(["git", "add", "-A"], root)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny study"], root)


def repro(root: Path, *args: str, check: bool = True) -> tuple[int, str, set[str]]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "VTP_NO_PROGRESS": "1"}
    proc = subprocess.run([DVC, "repro", *args], cwd=root, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert not check or proc.returncode == 0, out[-4000:]
    return proc.returncode, out, {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}


def test_a_killed_repro_resumes_without_rerunning_finished_stages(tmp_path):
    project(tmp_path, {"ae": {"loss": {"clip": False, "ssl": False}, "train": {"steps": 2}},
                       "vtp": {"train": {"steps": 60, "checkpoint_every": 4}}})
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1", "VTP_NO_PROGRESS": "1"}
    # Its own session, so the kill reaches dvc and the stage it runs, as a node's preemption would.
    proc = subprocess.Popen([DVC, "repro", "pretrain"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    ckpts = tmp_path / "runs" / "vtp" / "tokenizer" / "checkpoints"
    deadline = time.monotonic() + 600
    while not any((p / "state.json").exists() for p in ckpts.glob("step-*")):
        assert proc.poll() is None, "dvc repro ended before pretrain@vtp wrote a checkpoint"
        assert time.monotonic() < deadline, "no checkpoint appeared in time"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "runs" / "vtp" / "tokenizer" / "metrics.json").exists()  # it was stopped mid-run
    # DVC orders independent stages as it likes: pretrain@ae may have run before pretrain@vtp, or not yet.
    finished = set(yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"])
    assert "ingest" in finished and "pretrain@vtp" not in finished

    _, out, ran = repro(tmp_path, "pretrain")
    assert ran == {"ingest", "pretrain@ae", "pretrain@vtp"} - finished, out[-3000:]  # the finished: recorded
    resumed = [line for line in out.splitlines() if "resumed from" in line]
    assert resumed and int(resumed[0].rsplit("step ", 1)[1].rstrip(")")) >= 4, out[-3000:]
    metrics = json.loads((tmp_path / "runs" / "vtp" / "tokenizer" / "metrics.json").read_text())
    assert metrics["step"] == 60
    assert "up to date" in repro(tmp_path, "pretrain")[1]


def test_keep_going_keeps_every_other_configurations_outputs(tmp_path):
    # `diverges` validates but blows up at run time: its loss is non-finite by its second step (nan_policy: stop).
    project(tmp_path, {"ae": {"loss": {"clip": False, "ssl": False}, "train": {"steps": 2}},
                       "diverges": {"train": {"steps": 4, "lr": 1.0e+30, "grad_clip": 0.0}},
                       "vtp": {}})
    rc, out, ran = repro(tmp_path, "-k", "evaluate", check=False)
    assert rc != 0 and "non-finite" in out, out[-3000:]
    assert {"pretrain@ae", "pretrain@vtp", "evaluate@ae", "evaluate@vtp", "pretrain@diverges"} <= ran
    assert "evaluate@diverges" not in ran  # its input never came
    for cfg in ("ae", "vtp"):
        assert "psnr" in json.loads((tmp_path / "runs" / cfg / "eval" / "summary.json").read_text())
    # The finished configurations are recorded: a second pass retries only the failed one.
    rc, out, ran = repro(tmp_path, "-k", "evaluate", check=False)
    assert rc != 0 and ran == {"pretrain@diverges"}, out[-3000:]
