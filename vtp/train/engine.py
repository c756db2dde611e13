"""Pieces every training loop shares (VTP pretraining now, DiT training later): precision, seeding, signals,
non-finite handling, throughput/FLOP accounting and rank-0 metric logging. No model knowledge here."""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import signal
import time
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor

from vtp import dist as vdist
from vtp.config import Config
from vtp.log import log

# Fields that change how a run is observed, not what it computes: changing them keeps the run resumable.
OPERATIONAL = {"train": {"checkpoint_every", "keep_checkpoints", "log_every", "image_every", "nan_policy",
                         "peak_tflops", "compile"}, "eval": None, "runs_root": None, "name": None}


class NonFiniteLoss(RuntimeError):
    pass


class Interrupted(RuntimeError):
    pass


def config_fingerprint(cfg: Config) -> str:
    """Hash of everything that determines the trained weights; a checkpoint only resumes a matching run."""
    data = cfg.model_dump(mode="json")
    for key, fields in OPERATIONAL.items():
        if fields is None:
            data.pop(key, None)
        else:
            data[key] = {k: v for k, v in data[key].items() if k not in fields}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def autocast(device: torch.device, precision: str):
    """bf16 autocast on CUDA (or when asked for explicitly); fp32 elsewhere."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def set_determinism(deterministic: bool) -> None:
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
        """Collective: all ranks stop together if any rank was signalled."""
        flag = torch.tensor(float(self.signal is not None), device=device)
        return bool(vdist.all_reduce_sum(flag).item() > 0)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def check_finite(parts: dict[str, Tensor], step: int, device: torch.device) -> str | None:
    """Name of the first non-finite term on any rank, or None. Collective, so every rank agrees."""
    names = sorted(parts)
    bad = torch.tensor([0.0 if torch.isfinite(parts[n].detach()).all() else 1.0 for n in names], device=device)
    bad = vdist.all_reduce_sum(bad)
    for n, b in zip(names, bad.tolist()):
        if b > 0 and n != "loss":
            return n
    return "loss" if bad[names.index("loss")] > 0 else None


def measure_matmul_flops(device: torch.device, n: int = 2048, reps: int = 8) -> float:
    """fp32 matmul FLOP/s in this process, the best of `reps` (a busy machine only slows some of them): the
    reference 'peak' for MFU when no peak is declared."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(reps + 1):  # the first is a warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


class Meter:
    """Running means of logged scalars between log points, plus images/s."""

    def __init__(self):
        self.sums: dict[str, float] = {}
        self.count = 0
        self.images = 0
        self.t0 = time.perf_counter()

    def add(self, parts: dict[str, float], images: int) -> None:
        for k, v in parts.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1
        self.images += images

    def flush(self) -> tuple[dict[str, float], float, float]:
        elapsed = max(time.perf_counter() - self.t0, 1e-9)
        means = {k: v / max(self.count, 1) for k, v in self.sums.items()}
        out = (means, self.images / elapsed, elapsed / max(self.count, 1))
        self.__init__()
        return out


class Live:
    """dvclive on rank 0 only; other ranks get no-ops. Steps are set explicitly so a resumed run overwrites
    nothing and continues its curves."""

    def __init__(self, out_dir: Path, resume: bool, enabled: bool):
        self.live = None
        if enabled:
            from dvclive import Live as DvcLive

            try:
                self.live = DvcLive(dir=str(out_dir), resume=resume, save_dvc_exp=False, dvcyaml=None,
                                    report=None)
            except Exception as e:  # dvclive reads the git HEAD and fails in a repository without commits
                if "Empty git repo" in str(e):
                    raise RuntimeError("dvclive needs at least one commit in this git repository: "
                                       "`git commit` once, then re-run") from e
                raise

    def log(self, step: int, values: dict[str, float]) -> None:
        if self.live is None:
            return
        self.live.step = step
        for k, v in values.items():
            if v is not None and math.isfinite(v):
                self.live.log_metric(k, v)
        self.live.next_step()

    def log_image(self, name: str, path: Path) -> None:
        if self.live is not None:
            self.live.log_image(name, str(path))

    def close(self) -> None:
        if self.live is not None:
            self.live.end()


def repeat(loader_factory, start_epoch: int) -> Iterator[tuple[int, Any]]:
    """Yield (epoch, batch) forever from loader_factory(epoch)."""
    epoch = start_epoch
    while True:
        for batch in loader_factory(epoch):
            yield epoch, batch
        epoch += 1
