"""Process-level controls every training stage shares: precision, determinism, position-seeded randomness,
signals, and the collective finiteness check. No model knowledge here."""
from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import time
from typing import Any

import torch
from torch import Tensor

from vtp import dist as vdist
from vtp.log import log

_part_times: dict[str, float] | None = None  # "outer/inner" -> seconds, while `timing_parts` is active
_part_stack: list[str] = []


@contextlib.contextmanager
def part(name: str):
    """A named range of the training step: a torch.profiler range, and timed inside `timing_parts()`
    (`benchmarks/bench_train.py --profile`). Otherwise it costs a few microseconds."""
    with torch.profiler.record_function(f"vtp/{name}"):
        if _part_times is None:
            yield
            return
        _part_stack.append(name)
        _sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            _sync()
            path = "/".join(_part_stack)
            _part_times[path] = _part_times.get(path, 0.0) + time.perf_counter() - t0
            _part_stack.pop()


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


@contextlib.contextmanager
def timing_parts():
    """Collect the seconds spent in each `part` (nested ones as "outer/inner"). On CUDA each part synchronises
    on entry and exit, so the parts are attributed exactly but no longer overlap."""
    global _part_times
    _part_times = times = {}
    try:
        yield times
    finally:
        _part_times = None


class NonFiniteLoss(RuntimeError):
    """A loss term went NaN/inf: deterministic, so a retry would fail the same way."""


class Interrupted(RuntimeError):
    """Stopped by a signal after checkpointing; re-running the same command resumes."""


def autocast(device: torch.device, precision: str):
    """bf16 autocast on CUDA (or when asked for explicitly); fp32 elsewhere."""
    if not uses_bf16(device, precision):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def uses_bf16(device: torch.device, precision: str) -> bool:
    return precision == "bf16" or (precision == "auto" and device.type == "cuda")


def set_determinism(deterministic: bool) -> None:
    """MKL's strict reproducibility (MKL_CBWR) is set in vtp/__init__.py instead: MKL latches it at its first call,
    which may come before any trainer is built."""
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    elif torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def step_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed from (seed, step, micro-step, ...): every random draw is a function of where it happens, so a
    resumed run and an uninterrupted one draw the same numbers, and no RNG state needs checkpointing."""
    digest = hashlib.blake2b(repr((seed, *keys)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def generator(seed: int, *keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(step_seed(seed, *keys))


class GracefulStop:
    """Turns SIGTERM/SIGINT into a flag the loop checks after each step (torchrun allows 30 s before SIGKILL),
    so the run checkpoints and exits instead of dying mid-write."""

    def __init__(self):
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "GracefulStop":
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self.signal = signum
        log.warning("received %s: will checkpoint after this step and exit", signal.Signals(signum).name)

    def requested(self, device: torch.device) -> bool:
        """Collective, called by every rank after every step: all ranks stop together if any was signalled."""
        flag = torch.tensor(float(self.signal is not None), device=device)
        return bool(vdist.all_reduce_sum(flag).item() > 0)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def first_non_finite(parts: dict[str, Tensor], device: torch.device) -> str | None:
    """Name of the first non-finite term on any rank (a named term before the total), or None. Collective, so
    every rank agrees."""
    names = sorted(parts)
    bad = torch.tensor([0.0 if torch.isfinite(parts[n].detach()).all() else 1.0 for n in names], device=device)
    bad = vdist.all_reduce_sum(bad).tolist()
    flagged = [n for n, b in zip(names, bad) if b > 0]
    named = [n for n in flagged if n != "loss"]
    return (named or flagged or [None])[0]
