"""Throughput and model-FLOP utilisation, per device.

MFU = (FLOPs this device computes per step) / (step time) / (this device's peak). The peak is declared
(`train.peak_tflops`), or known for the device in the run's precision (dense bf16 of A100/H100/H200), or,
failing both, a matmul measured in this process in the run's own precision: that ratio is recorded as
`mfu_vs_matmul`, never as `mfu`, because a measured matmul is not the device's peak.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

# Dense bf16 tensor-core peaks (vendor datasheets, no sparsity), matched as substrings of the device name in
# this order (the PCIe and NVL H100s are slower than the SXM part whose name is just "H100").
KNOWN_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0),
                     ("A100", 312.0))


@dataclass(frozen=True)
class Peak:
    flops: float  # per device, FLOP/s
    source: str  # where the number comes from, recorded in metrics.json
    metric: str  # "mfu" against a real peak, "mfu_vs_matmul" against a measured matmul


def known_peak(device_name: str, bf16: bool) -> float | None:
    if not bf16:
        return None
    for key, tflops in KNOWN_BF16_TFLOPS:
        if key in device_name:
            return tflops * 1e12
    return None


def device_peak(device: torch.device, bf16: bool, declared_tflops: float | None) -> Peak:
    if declared_tflops:
        return Peak(declared_tflops * 1e12, "declared train.peak_tflops", "mfu")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if (flops := known_peak(name, bf16)) is not None:
            return Peak(flops, f"datasheet dense bf16 peak of {name}", "mfu")
    dtype = torch.bfloat16 if bf16 else torch.float32
    return Peak(measure_matmul_flops(device, dtype), f"best measured {str(dtype).removeprefix('torch.')} matmul "
                f"in this process", "mfu_vs_matmul")


def measure_matmul_flops(device: torch.device, dtype: torch.dtype = torch.float32, sizes=(1024, 2048),
                         reps: int = 6) -> float:
    """The best FLOP/s of square matmuls over a few sizes and repeats (a busy machine only slows some of them)."""
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for i in range(reps + 1):  # the first of each size is a warm-up
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            a @ b
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i:
                best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best


class Meter:
    """Running means of logged scalars between log points, plus images/s and seconds per step."""

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


def utilisation(flops_per_step_device: float, seconds_per_step: float, peak: Peak) -> dict[str, float]:
    achieved = flops_per_step_device / seconds_per_step if seconds_per_step > 0 else 0.0
    return {"flops_per_s_device": achieved, peak.metric: achieved / peak.flops}
