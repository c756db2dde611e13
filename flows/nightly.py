"""The `nightly-eval` flow: bring every configuration's evaluation and samples up to date against the remote.

`dvc repro evaluate@<cfg>` re-runs only what changed (DVC decides: new code, new parameters, a new tokenizer);
with `sync` the checkout pulls first and pushes after, so a scheduled run on a fresh worker starts from the remote.
"""
from __future__ import annotations

from prefect import flow

from flows.artifacts import publish
from flows.plan import check_configs
from flows.proc import no_orphans
from flows.tasks import DEFAULT_GRACE_S, DEFAULT_TIMEOUT_S, STAGE_TASKS, dvc_sync, stop_children
from flows.workspace import Workspace

EVAL_STAGES = ("evaluate", "sample")


@flow(name="nightly-eval", on_cancellation=[stop_children], on_crashed=[stop_children])
def nightly_eval(configurations: list[str] | None = None, workspace: str = ".", sync: bool = False,
                 timeout_s: float = DEFAULT_TIMEOUT_S, grace_s: float = DEFAULT_GRACE_S) -> list[dict]:
    with no_orphans(grace_s):
        return _nightly(Workspace(workspace), configurations, sync, timeout_s, grace_s)


def _nightly(ws: Workspace, configurations, sync, timeout_s, grace_s) -> list[dict]:
    configs = list(configurations or ws.configs())
    check_configs(ws, configs)
    if sync:
        dvc_sync("pull", str(ws.root))
    stages = [s for s in EVAL_STAGES if s in ws.pipeline()]
    # One checkout: sequential (DVC would serialise them anyway).
    results = [STAGE_TASKS[s](s, cfg, str(ws.root), timeout_s, grace_s) for cfg in configs for s in stages]
    if sync:
        dvc_sync("push", str(ws.root))
    publish("nightly-eval", results, ws.root, ws.remote())
    return results
