"""The `scaling-study` flow: every stage of the pipeline for a list of configurations, through DVC.

Configurations fan out; DVC calls within one checkout are serialised (a lock per workspace). Pass several
checkouts (`workspaces`) to run configurations in parallel: the shared stages run in the first and reach the others
through the DVC remote's run cache; every checkout pushes its results (`push=True`).
"""
from __future__ import annotations

from prefect import allow_failure, flow, get_run_logger
from prefect.futures import wait

from flows.artifacts import publish
from flows.plan import assign, check_configs, plan, schedule
from flows.proc import no_orphans
from flows.tasks import DEFAULT_GRACE_S, DEFAULT_TIMEOUT_S, STAGE_TASKS, dvc_sync, stop_children
from flows.workspace import Workspace


def launch_env(nproc: str) -> dict[str, str] | None:
    """VTP_NPROC makes flows/bin/vtp run distributed stages under torchrun (an int, or "gpu")."""
    return None if str(nproc) in ("", "1") else {"VTP_NPROC": str(nproc)}


@flow(name="scaling-study", on_cancellation=[stop_children], on_crashed=[stop_children])
def scaling_study(configurations: list[str] | None = None, stages: list[str] | None = None,
                  workspaces: list[str] | None = None, push: bool = False, nproc: str = "1",
                  timeout_s: dict[str, float] | None = None, grace_s: float = DEFAULT_GRACE_S) -> list[dict]:
    """configurations: names under params.yaml `configs:` (default: all). stages: a subset of the registry (default:
    every stage dvc.yaml defines). workspaces: checkouts to spread configurations over (default: this one)."""
    with no_orphans(grace_s):
        results = _study(configurations, stages, workspaces, push, nproc, timeout_s or {}, grace_s)
    get_run_logger().info("%d stage runs", len(results))
    return results


def _study(configurations, stages, workspaces, push, nproc, timeout_s, grace_s) -> list[dict]:
    roots = [Workspace(p) for p in (workspaces or ["."])]
    primary = roots[0]
    configs = list(configurations or primary.configs())
    check_configs(primary, configs)
    shared, chain, final = plan(primary, stages)
    env = launch_env(nproc)
    upstream = stages is not None  # a subset: DVC brings the stages it depends on up to date itself

    def limit(stage: str) -> float:
        return timeout_s.get(stage, DEFAULT_TIMEOUT_S)

    results = [STAGE_TASKS[s](s, None, str(primary.root), limit(s), grace_s, env, upstream) for s in shared]
    others = roots[1:]
    if others and shared:  # the others restore ingest/judge from the run cache instead of recomputing them
        dvc_sync("push", str(primary.root))
        for ws in others:
            dvc_sync("pull", str(ws.root))
            results += [STAGE_TASKS[s](s, None, str(ws.root), limit(s), grace_s, env, upstream, True)
                        for s in shared]

    futures = []
    for ws, items in schedule(assign(configs, roots), chain).items():
        previous_in_ws, previous_of = None, {}
        for cfg, s in items:
            # Data dependency on the configuration's previous stage; order only (allow_failure) on the workspace's
            # previous task, so one checkout runs one stage at a time and one config's failure spares the others.
            waits = [previous_of[cfg]] if cfg in previous_of else []
            if previous_in_ws is not None:
                waits.append(allow_failure(previous_in_ws))
            future = STAGE_TASKS[s].submit(s, cfg, str(ws.root), limit(s), grace_s, env, upstream, wait_for=waits)
            futures.append(future)
            previous_in_ws = previous_of[cfg] = future
    wait(futures)
    failed = [f for f in futures if not f.state.is_completed()]
    results += [f.result() for f in futures if f.state.is_completed()]
    if final and (failed or others):  # the report reads every configuration's results from one checkout
        get_run_logger().warning("%s not run: %s", ", ".join(final), "a stage failed" if failed else
                                 "results are spread over several checkouts; run `dvc repro report` in one that "
                                 "holds them all")
    elif final:
        results += [STAGE_TASKS[s](s, None, str(primary.root), limit(s), grace_s, env, upstream) for s in final]
    if push:
        for ws in roots:
            dvc_sync("push", str(ws.root))
    publish("scaling-study", results, primary.root, primary.remote())
    if failed:
        messages = [str(f.state.message or f.state.name) for f in failed]
        raise RuntimeError(f"{len(failed)} stage run(s) did not complete:\n" + "\n".join(messages))
    return results


if __name__ == "__main__":  # python -m flows.study [CONFIG ...]: the study in this checkout, no server needed
    import sys

    scaling_study(configurations=sys.argv[1:] or None)
