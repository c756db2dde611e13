"""flows/bin/vtp, what dvc.yaml's `vtp` resolves to inside a flow: torchrun for the distributed stages when
VTP_NPROC asks for it, the plain CLI otherwise, always the checkout's own code (DVC_ROOT first on PYTHONPATH)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from flows.workspace import SHIM

pytestmark = pytest.mark.flows

STUB = '#!/usr/bin/env bash\necho "$(basename "$0") $* | PYTHONPATH=$PYTHONPATH"\n'


@pytest.fixture
def stubs(tmp_path) -> Path:
    for name in ("torchrun", "python"):
        (tmp_path / name).write_text(STUB)
        (tmp_path / name).chmod(0o755)
    return tmp_path


def launch(stubs: Path, args: list[str], **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VTP_") and k != "PYTHONPATH"}
    full = {**clean, "PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}", "DVC_ROOT": "/ws", **env}
    return subprocess.run([str(SHIM / "vtp"), *args], env=full, capture_output=True, text=True, check=True).stdout


def test_single_process_by_default(stubs):
    out = launch(stubs, ["pretrain", "--config", "vtp"])
    assert out == "python -m vtp.cli pretrain --config vtp | PYTHONPATH=/ws\n"


def test_distributed_stages_run_under_torchrun(stubs):
    out = launch(stubs, ["pretrain", "--config", "vtp"], VTP_NPROC="gpu")
    assert out.startswith("torchrun --standalone --nproc_per_node gpu -m vtp.cli pretrain --config vtp")
    out = launch(stubs, ["latents", "--config", "a b"], VTP_NPROC="2", VTP_NNODES="4", VTP_RDZV_ENDPOINT="head:29500")
    assert out.startswith("torchrun --nnodes 4 --rdzv-backend c10d --rdzv-endpoint head:29500 --nproc_per_node 2 "
                          "-m vtp.cli latents --config a b")


def test_single_process_stages_stay_single(stubs):
    assert launch(stubs, ["ingest", "--source", "synthetic"], VTP_NPROC="8").startswith("python -m vtp.cli ingest")
