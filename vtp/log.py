"""One logging setup for every stage: rank 0 talks, other ranks only warn; progress bars on rank 0 only."""
from __future__ import annotations

import logging
import os
import sys
from typing import Iterable, TypeVar

T = TypeVar("T")
log = logging.getLogger("vtp")


def rank() -> int:
    # Read the launcher's environment so this works before (and without) torch.distributed.
    return int(os.environ.get("RANK", "0"))


def setup_logging(level: str | int = "INFO") -> logging.Logger:
    root = logging.getLogger("vtp")
    if not getattr(root, "_vtp_configured", False):
        handler = logging.StreamHandler(sys.stderr)
        prefix = f"[rank {rank()}] " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s",
                                               datefmt="%H:%M:%S"))
        root.addHandler(handler)
        root.propagate = False
        root._vtp_configured = True  # type: ignore[attr-defined]
    root.setLevel(level if rank() == 0 else logging.WARNING)
    return root


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", **kw) -> Iterable[T]:
    """tqdm on rank 0 (and only when enabled), the plain iterable elsewhere."""
    if rank() != 0 or os.environ.get("VTP_NO_PROGRESS"):
        return iterable
    from tqdm.auto import tqdm

    # Not a terminal (DVC, CI, a log file): a line every 30 s instead of a carriage-return stream.
    if not sys.stderr.isatty():
        kw.setdefault("mininterval", 30.0)
    return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, **kw)
