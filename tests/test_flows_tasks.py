"""Stage tasks through real DVC in small workspaces: a transient failure is retried and the flow completes, a
configuration error fails at once, and a timed-out or cancelled 2-process torchrun leaves no process behind and
resumes on the next run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml
from prefect import flow
from prefect.testing.utilities import prefect_test_harness

from flows import proc
from flows.failures import StageFailed
from flows.study import scaling_study
from flows.tasks import STAGE_TASKS, stop_children
from flows.workspace import dvc_bin

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.flows
TICKER = '''\
import json, os, pathlib, signal, sys, time
rank, total = int(os.environ["RANK"]), int(os.environ["TICKS"])
pathlib.Path("pids").mkdir(exist_ok=True)
pathlib.Path("pids", str(os.getpid())).write_text(str(os.getppid()))  # the worker and its torchrun agent
state = pathlib.Path("state"); state.mkdir(exist_ok=True)
ckpt = state / f"rank{rank}.json"
step = start = json.loads(ckpt.read_text())["step"] if ckpt.exists() else 0
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
while step < total and not stop:
    time.sleep(0.1)
    step += 1
    (state / f"tmp{rank}").write_text(json.dumps({"step": step, "start": start}))
    os.replace(state / f"tmp{rank}", ckpt)
(state / f"exit{rank}").write_text("sigterm" if stop else "done")
'''


@pytest.fixture(scope="module", autouse=True)
def harness():
    with prefect_test_harness(server_startup_timeout=120):
        yield


def workspace(root: Path, stages: dict, params: dict, files: dict[str, str]) -> Path:
    root.mkdir()
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    for name, text in files.items():
        (root / name).write_text(text)
    for args in (["git", "init", "-q"], [dvc_bin(), "init", "-q"]):
        subprocess.run(args, cwd=root, check=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    return root


def attempts(root: Path) -> int:
    path = root / "attempts"
    return len(path.read_text().splitlines()) if path.exists() else 0


FLAKY = '''\
import pathlib, sys
with open("attempts", "a") as f:
    f.write("x\\n")
if len(pathlib.Path("attempts").read_text().splitlines()) == 1:
    sys.exit("OSError: [Errno 5] Input/output error: 'data/shards'")  # a storage hiccup, once
pathlib.Path("out").mkdir(exist_ok=True)
pathlib.Path("out/done.txt").write_text("ok")
'''


def test_transient_failure_is_retried_and_the_flow_completes(tmp_path):
    ws = workspace(tmp_path / "ws", {"ingest": {"cmd": "python flaky.py", "deps": ["flaky.py"], "outs": ["out"]}},
                   {"configs": {}}, {"flaky.py": FLAKY})
    task = STAGE_TASKS["ingest"].with_options(retry_delay_seconds=0.2)

    @flow
    def one_stage():
        return task("ingest", None, str(ws))

    result = one_stage()
    assert attempts(ws) == 2 and (ws / "out" / "done.txt").read_text() == "ok"
    assert result["target"] == "ingest" and result["ran"] and result["outputs"] == ["out"]


def test_config_error_fails_at_once(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["configs"] = {"bad": {"model": {"patch": 15}}}  # 15 does not divide the 32 px resolution
    stage = {"foreach": "${configs}", "do": {"cmd": "echo x >> attempts && vtp pretrain --config ${key}",
                                             "outs": ["runs/${key}/tokenizer"]}}
    ws = workspace(tmp_path / "ws", {"pretrain": stage}, params, {})

    @flow
    def one_stage():
        return STAGE_TASKS["pretrain"].with_options(retry_delay_seconds=0.2)("pretrain", "bad", str(ws))

    with pytest.raises(StageFailed) as info:
        one_stage()
    assert attempts(ws) == 1  # no retry
    assert info.value.cause == "configuration error" and not info.value.transient
    assert "model.patch = 15" in str(info.value)


def torchrun_workspace(root: Path) -> Path:
    stage = {"foreach": "${configs}", "do": {
        "cmd": "torchrun --standalone --nproc_per_node 2 ticker.py",
        "outs": [{"state": {"persist": True, "cache": False}}]}}
    return workspace(root, {"pretrain": stage}, {"configs": {"tiny": {}}}, {"ticker.py": TICKER})


def recorded_pids(ws: Path) -> set[int]:
    pids = set()
    for f in (ws / "pids").iterdir():
        pids |= {int(f.name), int(f.read_text())}
    return pids


def alive(pids: set[int]) -> set[int]:
    return {p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE}


def steps(ws: Path) -> list[dict]:
    return [json.loads((ws / "state" / f"rank{r}.json").read_text()) for r in (0, 1)]


def wait_for_steps(ws: Path, n: int, limit: float = 180) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if min(s["step"] for s in steps(ws)) >= n:
                return
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.2)
    raise AssertionError("the 2-process torchrun never started stepping")


def test_timeout_stops_the_whole_torchrun_tree_and_the_rerun_resumes(tmp_path):
    ws = torchrun_workspace(tmp_path / "ws")
    task = STAGE_TASKS["pretrain"].with_options(retries=0)

    @flow
    def one_stage(timeout_s: float, ticks: int):
        return task("pretrain", "tiny", str(ws), timeout_s, 20.0, {"TICKS": str(ticks)})

    with pytest.raises(StageFailed) as info:
        one_stage(45.0, 100_000)  # torchrun starts in ~5-20 s here; then it ticks until the timeout
    assert info.value.transient and "timed out" in info.value.cause
    pids = recorded_pids(ws)
    assert len(pids) == 3, pids  # two workers + their torchrun agent (the workers run in sessions of their own)
    assert not alive(pids)
    assert [(ws / "state" / f"exit{r}").read_text() for r in (0, 1)] == ["sigterm"] * 2  # a graceful stop
    stopped = min(s["step"] for s in steps(ws))
    assert stopped > 0

    one_stage(300.0, stopped + 5)
    assert {s["start"] for s in steps(ws)} <= {stopped, stopped + 1}  # resumed where the checkpoint was
    assert [s["step"] for s in steps(ws)] == [stopped + 5] * 2


def test_cancellation_hook_stops_a_running_torchrun(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "ticker.py").write_text(TICKER)
    env = {**os.environ, "TICKS": "100000", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    argv = ["torchrun", "--standalone", "--nproc_per_node", "2", "ticker.py"]
    runner = threading.Thread(target=proc.run, args=(argv, ws, env), kwargs={"grace_s": 20.0})
    runner.start()
    wait_for_steps(ws, 1)

    class Run:
        name = "cancelled-run"

    stop_children(None, Run, None)  # what on_cancellation / on_crashed / no_orphans call
    runner.join(timeout=60)
    assert not runner.is_alive()
    pids = recorded_pids(ws)
    assert len(pids) == 3 and not alive(pids)


STEP = '''\
import pathlib, sys
stage, cfg = sys.argv[1:]
with open("attempts", "a") as f:
    f.write(f"{stage}@{cfg}\\n")
if cfg == "bad":
    sys.exit("error: config 'bad': train.steps = -1: must be >= 1")
pathlib.Path("runs", cfg).mkdir(parents=True, exist_ok=True)
pathlib.Path("runs", cfg, f"{stage}.json").write_text('{"psnr": 30.5}')
'''


def test_study_isolates_a_failing_configuration(tmp_path):
    def stage(name):
        return {"foreach": "${configs}", "do": {"cmd": f"python step.py {name} ${{key}}", "deps": ["step.py"],
                                                "metrics": [{f"runs/${{key}}/{name}.json": {"cache": False}}]}}
    ws = workspace(tmp_path / "ws", {"pretrain": stage("pretrain"), "evaluate": stage("evaluate")},
                   {"configs": {"bad": {}, "good": {}}}, {"step.py": STEP})
    with pytest.raises(RuntimeError, match="(?s)2 stage run.*pretrain@bad: configuration error"):
        scaling_study(workspaces=[str(ws)])
    # pretrain@bad failed once (a config error: no retry), evaluate@bad never ran; good ran both, after bad
    assert (ws / "attempts").read_text().split() == ["pretrain@bad", "pretrain@good", "evaluate@good"]
    with pytest.raises(ValueError, match="unknown configuration"):
        scaling_study(workspaces=[str(ws)], configurations=["nosuch"])


SHARDS = '''\
import pathlib, sys
stage, cfg = sys.argv[1:]
with open("attempts", "a") as f:
    f.write(f"{stage}@{cfg}\\n")
if stage == "ingest":
    pathlib.Path("shards").mkdir(exist_ok=True)
    pathlib.Path("shards/data.txt").write_text("shards")
else:
    assert pathlib.Path("shards/data.txt").read_text() == "shards"
    pathlib.Path("runs", cfg).mkdir(parents=True, exist_ok=True)
    pathlib.Path("runs", cfg, "metrics.json").write_text('{"loss": 0.5}')
'''


def test_study_spreads_configurations_over_checkouts(tmp_path):
    pretrain = {"cmd": "python step.py pretrain ${key}", "deps": ["step.py", "shards"],
                "metrics": [{"runs/${key}/metrics.json": {"cache": False}}]}
    stages = {"ingest": {"cmd": "python step.py ingest all", "deps": ["step.py"], "outs": ["shards"]},
              "pretrain": {"foreach": "${configs}", "do": pretrain}}
    one = workspace(tmp_path / "one", stages, {"configs": {"a": {}, "b": {}}}, {"step.py": SHARDS})
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([dvc_bin(), "remote", "add", "-d", "store", str(tmp_path / "remote")], cwd=one, check=True)
    subprocess.run(["git", "add", "-A"], cwd=one, check=True)
    subprocess.run([*git, "commit", "-qm", "two checkouts"], cwd=one, check=True)
    subprocess.run(["git", "clone", "-q", str(one), str(tmp_path / "two")], check=True)
    two = tmp_path / "two"

    results = scaling_study(workspaces=[str(one), str(two)], push=True)
    assert [(r["target"], Path(r["workspace"]).name, r["ran"]) for r in results] == [
        ("ingest", "one", True), ("ingest", "two", False), ("pretrain@a", "one", True), ("pretrain@b", "two", True)]
    assert (one / "attempts").read_text().split() == ["ingest@all", "pretrain@a"]
    assert (two / "attempts").read_text().split() == ["pretrain@b"]  # the shards came from the run cache
    assert (two / "shards" / "data.txt").read_text() == "shards"
    assert next(r for r in results if r["target"] == "pretrain@b")["metrics"] == {"loss": 0.5}
