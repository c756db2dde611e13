"""Distributed context: one code path for 1 CPU process, N GPUs under torchrun, and many nodes.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them we run single-process. NCCL on CUDA, gloo on CPU.
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(timeout_s: int = 1800) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and os.environ.get("VTP_DEVICE", "") != "cpu"
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=dt.timedelta(seconds=timeout_s),
                                device_id=device if cuda else None)
    return DistInfo(rank, world, local_rank, device)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def get_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t)
    return t


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    return all_reduce_sum(t) / world_size()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def block(n: int, rank: int | None = None, world: int | None = None) -> range:
    """This rank's contiguous share of n items (rank order = item order, so gathered results keep it)."""
    rank, world = get_rank() if rank is None else rank, world_size() if world is None else world
    per = -(-n // world)
    return range(min(n, rank * per), min(n, (rank + 1) * per))


def all_gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's rows in rank order (ranks may hold different row counts; padded in transit)."""
    if not dist.is_initialized():
        return t
    counts = [torch.zeros(1, dtype=torch.long, device=t.device) for _ in range(world_size())]
    dist.all_gather(counts, torch.tensor([t.shape[0]], device=t.device))
    most = int(max(c.item() for c in counts))
    padded = torch.zeros((most, *t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(c.item())] for p, c in zip(parts, counts)])
