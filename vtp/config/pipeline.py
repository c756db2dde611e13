"""The part of `dvc.yaml` that names configurations one by one, rendered from params.yaml's `configs:`.

DVC's `foreach` expands the per-configuration stages, but nothing in dvc.yaml can aggregate over it: the report's
dependencies, the dvclive plots and the model artifacts must list every configuration. They live in one block at the
end of dvc.yaml that this module renders; `vtp study use` rewrites it with the configurations, and a test holds the
shipped dvc.yaml to params.yaml.
"""
from __future__ import annotations

import re
from pathlib import Path

from vtp.config.base import ConfigError
from vtp.fileio import write_bytes_atomic

MARKER = "# >>> per-configuration block: rendered by vtp.config.pipeline (`vtp study use`); do not edit by hand\n"
REPORT_CODE = ("vtp/__init__.py", "vtp/config", "vtp/dist.py", "vtp/fileio.py", "vtp/log.py", "vtp/runinfo.py",
               "vtp/stages.py", "vtp/models/__init__.py", "vtp/models/registry.py", "vtp/report")


def artifact_name(kind: str, config: str) -> str:
    """DVC artifact names allow lower-case letters, digits and dashes."""
    return f"{kind}-" + re.sub(r"[^a-z0-9-]+", "-", config.lower()).strip("-")


def render(configs: list[str]) -> str:
    from vtp.report.collect import FILES  # what one report row reads

    deps = [*REPORT_CODE, *(f"runs/{c}/{f}" for c in configs for f in FILES)]
    lines = [MARKER, "  report:   # once, after every configuration's chain\n", "    cmd: vtp report\n", "    deps:\n"]
    lines += [f"      - {d}\n" for d in deps]
    lines += ["    outs:\n", "      - reports   # summary.md, table.{md,csv}, fits.json, <metric>_vs_flops.png\n",
              "\nplots:\n"]
    for c in configs:
        lines += [f"  - runs/{c}/tokenizer/dvclive/plots/metrics:\n", "      x: step\n"]
    lines.append("\nartifacts:   # `dvc artifacts get . NAME`; each folder also holds config.json\n")
    for c in configs:
        for kind, path, what in (("tokenizer", "tokenizer", "tokenizer"), ("dit", "dit", "DiT (EMA weights)")):
            lines += [f"  {artifact_name(kind, c)}:\n", f"    path: runs/{c}/{path}/model.safetensors\n",
                      "    type: model\n", f"    desc: the {what} of configuration {c}\n", f"    labels: [{kind}]\n"]
    return "".join(lines)


def sync_dvc_yaml(path: Path, configs: list[str]) -> bool:
    """Rewrite dvc.yaml's per-configuration block (everything from MARKER on) for `configs`; True if it changed."""
    path = Path(path)
    text = path.read_text()
    at = text.find(MARKER)
    if at < 0:
        raise ConfigError(f"{path}: no per-configuration block (the line {MARKER.strip()!r}) to rewrite")
    new = text[:at] + render(configs)
    if new == text:
        return False
    write_bytes_atomic(path, new.encode())
    return True
