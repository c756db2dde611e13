"""Which stages a flow runs, in which order, where: the registry's order, limited to what dvc.yaml defines."""
from __future__ import annotations

from flows.workspace import Workspace
from vtp.stages import STAGES


def plan(ws: Workspace, stages: list[str] | None = None) -> tuple[list[str], list[str], list[str]]:
    """(shared, per_config, final): stages run once per workspace (ingest, judge), then each configuration's
    chain, then once over all of them (report)."""
    defined = ws.pipeline()
    unknown = sorted(set(stages or ()) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGES)}")
    chosen = [s for s in STAGES if s in defined and (stages is None or s in stages)]
    once = [s for s in chosen if not STAGES[s].per_config]
    return ([s for s in once if not STAGES[s].final], [s for s in chosen if STAGES[s].per_config],
            [s for s in once if STAGES[s].final])


def assign(configs: list[str], workspaces: list[Workspace]) -> dict[str, Workspace]:
    """Round-robin: configuration i runs in checkout i mod N (DVC serialises calls within one checkout)."""
    return {cfg: workspaces[i % len(workspaces)] for i, cfg in enumerate(configs)}


def check_configs(ws: Workspace, configs: list[str]) -> None:
    known = ws.configs()
    bad = [c for c in configs if c not in known]
    if bad:  # a config error: fail before any work, naming what exists
        raise ValueError(f"unknown configuration(s) {', '.join(bad)}; params.yaml configs: {', '.join(known)}")


def schedule(where: dict[str, Workspace], chain: list[str]) -> dict[Workspace, list[tuple[str, str]]]:
    """Each checkout's (config, stage) sequence, configuration by configuration: one checkout runs one stage at a
    time (DVC would make the others wait for its lock, and they would hold GPU slots while waiting)."""
    out: dict[Workspace, list[tuple[str, str]]] = {}
    for cfg, ws in where.items():
        out.setdefault(ws, []).extend((cfg, stage) for stage in chain)
    return out
