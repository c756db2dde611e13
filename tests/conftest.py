"""Shared test setup: offline, quiet, small thread counts (the CI machine has two cores)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("VTP_NO_PROGRESS", "1")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="vtp-prefect-"))  # never the user's Prefect state

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def params_file(tmp_path):
    """A copy of the repository's params.yaml in a temporary folder (tests edit it freely)."""
    dst = tmp_path / "params.yaml"
    dst.write_text((REPO / "params.yaml").read_text())
    return dst
