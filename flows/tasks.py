"""One Prefect task per registry stage (`vtp stages`): the task named `pretrain` runs `dvc repro pretrain@<cfg>`.

A task returns paths and metrics (never models). Transient failures are retried with back-off, deterministic ones
fail at once (flows.failures); the timeout is enforced on the child process group (flows.proc), not by Prefect.
"""
from __future__ import annotations

import time

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run
from prefect.tasks import exponential_backoff

from flows import proc
from flows.failures import retry_transient
from flows.workspace import Workspace
from vtp.stages import STAGES

GPU_STAGES = {"pretrain", "decoder-gan", "latents", "train-dit", "sample", "evaluate-generation", "evaluate", "judge"}
DEFAULT_TIMEOUT_S = 48 * 3600.0
DEFAULT_GRACE_S = 60.0  # SIGTERM -> SIGKILL: time for the trainer to write its checkpoint


def _run_name() -> str:
    p = task_run.parameters
    return f"{p['stage']}@{p['config']}" if p.get("config") else p["stage"]


def run_stage(stage: str, config: str | None, workspace: str, timeout_s: float | None = DEFAULT_TIMEOUT_S,
              grace_s: float = DEFAULT_GRACE_S, env: dict[str, str] | None = None, upstream: bool = True,
              pull: bool = False) -> dict:
    """`dvc repro <stage>[@config]` in workspace; returns the stage's output paths and metrics. upstream=False
    (`dvc repro --single-item`) when the calling flow itself has just run the stages this one depends on: DVC then
    skips re-checking the whole graph (about a second per call). pull=True (`--pull`) restores a stage another
    checkout already ran and pushed (DVC's run cache) instead of running it again."""
    logger = get_run_logger()
    ws = Workspace(workspace)
    target = ws.target(stage, config)
    start = time.monotonic()
    args = ["repro", *([] if upstream else ["--single-item"]), *(["--pull"] if pull else []), target]
    done = ws.dvc(args, timeout_s=timeout_s, grace_s=grace_s, env=env)
    paths = ws.outputs(stage, config if target != stage else None)
    ran = f"Running stage '{target}'" in done.output
    logger.info("%s %s in %.1f s (%.1f s waiting for the workspace)", target, "ran" if ran else "was up to date",
                done.seconds, time.monotonic() - start - done.seconds)
    return {"stage": stage, "config": config, "target": target, "workspace": str(ws.root), "ran": ran,
            "seconds": round(done.seconds, 2), "outputs": paths["outs"] + paths["metrics"],
            "metrics": ws.metrics(paths)}


def _stage_task(name: str):
    return task(run_stage, name=name, task_run_name=_run_name, tags=["gpu"] if name in GPU_STAGES else [],
                retries=2, retry_delay_seconds=exponential_backoff(backoff_factor=10), retry_jitter_factor=0.5,
                retry_condition_fn=retry_transient, cache_policy=NO_CACHE)


STAGE_TASKS = {name: _stage_task(name) for name in STAGES}


@task(name="dvc-sync", retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=5),
      retry_condition_fn=retry_transient, cache_policy=NO_CACHE, task_run_name="dvc-{direction}")
def dvc_sync(direction: str, workspace: str, run_cache: bool = True, timeout_s: float = 6 * 3600.0) -> str:
    """`dvc pull` (missing objects are fine: nothing pushed yet) or `dvc push`, with the run cache, so another
    checkout restores a cacheable stage (ingest, judge) instead of recomputing it."""
    args = [direction, *(["--run-cache"] if run_cache else [])]
    if direction == "pull":
        args.append("--allow-missing")
    Workspace(workspace).dvc(args, timeout_s=timeout_s, grace_s=10)
    return direction


def stop_children(flow, flow_run, state) -> None:
    """Flow hook (on_cancellation, on_crashed): no trainer outlives the flow."""
    stopped = proc.kill_all(DEFAULT_GRACE_S)
    if stopped:
        print(f"stopped {stopped} running stage command(s) of flow run {flow_run.name}")
