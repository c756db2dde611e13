"""The `ingest` flow: (re)build the shards when their inputs changed, and publish them to the DVC remote."""
from __future__ import annotations

from prefect import flow

from flows.proc import no_orphans
from flows.tasks import DEFAULT_GRACE_S, DEFAULT_TIMEOUT_S, STAGE_TASKS, dvc_sync, stop_children
from flows.workspace import Workspace


@flow(name="ingest", on_cancellation=[stop_children], on_crashed=[stop_children])
def ingest_flow(workspace: str = ".", sync: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S,
                grace_s: float = DEFAULT_GRACE_S) -> dict:
    with no_orphans(grace_s):
        return _ingest(Workspace(workspace), sync, timeout_s, grace_s)


def _ingest(ws: Workspace, sync, timeout_s, grace_s) -> dict:
    if sync:
        dvc_sync("pull", str(ws.root))
    result = STAGE_TASKS["ingest"]("ingest", None, str(ws.root), timeout_s, grace_s)
    if sync:
        dvc_sync("push", str(ws.root))
    return result
