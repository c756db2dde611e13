"""Training-speed benchmark. Every figure is a ratio against a reference measured in the same run:

(a) our encoder forward+backward+AdamW vs timm's VisionTransformer of the same width, depth, tokens and MLP FLOPs
    and vs timm's Eva with our blocks, at this configuration's shape (bench_encoder.compare; bench_encoder.py
    runs the issue's shapes, eager and compiled);
(b) the full VTP step's achieved FLOP/s vs a large matmul's FLOP/s in this process, in the step's own dtype
    (bf16 autocast on CUDA), and on a GPU with a datasheet peak (A100/H100/H200) or train.peak_tflops, its MFU;
(c) the three-objective step vs the sum of its parts (CLIP-only, SSL-only and reconstruction-only steps on
    the same subset sizes): the overhead of running them together;
(d) the step with `train.compile: true` (the blocks compiled in place) vs the eager step (--no-compile skips it).
(b)-(d) time every step configuration interleaved with the others in one process, best of --repeats.

--profile instead prints where one VTP step's time goes: the step's named ranges (vtp.train.runtime.part: views
and masks, teacher, SSL targets, CLIP image and text towers and loss, SSL student, reconstruction and its loss,
backward, optimizer, EMA) as shares of the fastest of a few steps (on CUDA each part synchronises: exact
attribution, no overlap).

    python benchmarks/bench_train.py [--config vtp] [--shape demo] [--set key=value ...] [--repeats 5]
    python benchmarks/bench_train.py --shape vtp-b-256 --profile   # the GPU-like shape (gpu.sh: bf16, batch 128)
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from vtp import dist as vdist
from vtp.config import load_config
from vtp.train.accounting import device_peak, measure_matmul_flops
from vtp.train.data import memory_loader, stream
from vtp.train.pretrain import Pretrainer
from vtp.train.runtime import timing_parts, uses_bf16

from bench_encoder import compare, sync

DEVICE = vdist.init_distributed().device

# --shape: overrides applied before --set (a later --set wins). "demo" is the configuration as it is; "vtp-b-256"
# is the GPU-like shape the issue tracks (VTP-B at 256 px, 224/96 px crops, 8 local crops), at a CPU-sized batch.
SHAPES = {
    "demo": [],
    "vtp-b-256": ["model.size=vtp-b-d64", "data.resolution=256", "aug.global_crop_size=224",
                  "aug.local_crop_size=96", "aug.local_crops=8", "train.batch_size=16"],
}


def make_trainer(cfg, tmp: str) -> tuple[Pretrainer, object]:
    res = cfg.data.resolution
    g = torch.Generator().manual_seed(0)
    images = torch.rand(256, 3, res, res, generator=g) * 2 - 1
    captions = [f"a small shape number {i} on a plain background" for i in range(256)]
    trainer = Pretrainer(cfg, vdist.init_distributed(), resume=False,
                         loader=memory_loader(images, captions, cfg.train.batch_size // cfg.train.grad_accum))
    return trainer, stream(trainer.make_loader(), 0, 0)


def interleaved_steps(cfgs: dict, repeats: int, tmp: str, warmup: int = 3) -> tuple[dict[str, float], float]:
    """Best step time of each configuration, the trainers stepped in turn (a noisy machine slows all alike), and
    the first configuration's FLOPs per step; `warmup` steps each first (compilation, and recompilation for the
    step's other shapes)."""
    runs = {name: make_trainer(cfg, tmp) for name, cfg in cfgs.items()}
    first, batches = next(iter(runs.values()))
    first._count_flops([next(batches) for _ in range(first.grad_accum)])
    for trainer, batches in runs.values():
        for _ in range(warmup):
            trainer._train_step(batches)
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, (trainer, batches) in runs.items():
            sync(DEVICE)
            t0 = time.perf_counter()
            trainer._train_step(batches)
            sync(DEVICE)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best, first.flops_per_step_device


def profile(cfg, steps: int, tmp: str) -> None:
    """The share of each named part of the step, nested parts indented under the part that contains them."""
    trainer, batches = make_trainer(cfg, tmp)
    for _ in range(2):  # warm-up (the first step also counts FLOPs)
        trainer._train_step(batches)
    best: dict[str, float] | None = None
    best_step = float("inf")
    for _ in range(steps):  # the fastest of `steps` steps, timed whole and by part
        with timing_parts() as times:
            sync(DEVICE)
            t0 = time.perf_counter()
            trainer._train_step(batches)
            sync(DEVICE)
            step_s = time.perf_counter() - t0
        if step_s < best_step:
            best, best_step = dict(times), step_s
    print(f"one VTP step: {best_step * 1e3:.1f} ms (best of {steps}); time per part (vtp.train.runtime.part)")
    print(f"{'part':34s} {'ms':>9s} {'share':>7s}")
    for path in sorted(best, key=lambda p: [-best[q] for q in _prefixes(p)]):
        name = "  " * path.count("/") + path.rsplit("/", 1)[-1]
        print(f"{name:34s} {best[path] * 1e3:9.1f} {best[path] / best_step:7.1%}")
    named = sum(t for p, t in best.items() if "/" not in p)
    print(f"{'(outside the named parts)':34s} {(best_step - named) * 1e3:9.1f} {1 - named / best_step:7.1%}")


def _prefixes(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="vtp")
    ap.add_argument("--shape", choices=SHAPES, default="demo", help="a preset of --set overrides (SHAPES)")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="print the step's time per part instead")
    ap.add_argument("--no-compile", action="store_true", help="skip (d), the compiled step")
    args = ap.parse_args()
    args.set = [*SHAPES[args.shape], *args.set]
    os.environ.setdefault("VTP_NO_PROGRESS", "1")
    tmp = "/tmp/vtp-bench-runs"
    cfg = load_config(args.config, [*args.set, f"runs_root={tmp}"])
    device = DEVICE
    print(f"device {device}, torch threads {torch.get_num_threads()}, config {cfg.name}: {cfg.model.size} at "
          f"{cfg.data.resolution}px, batch {cfg.train.batch_size}, subsets {cfg.batch_subsets()}")

    if args.profile:
        return profile(cfg, args.repeats, tmp)
    spec = cfg.model.spec()
    enc = compare(spec.encoder, spec.patch, cfg.data.resolution, cfg.train.batch_size, args.repeats, False, DEVICE,
                  cfg.train.precision)
    print(f"(a) encoder fwd+bwd+AdamW: ours {enc['ours'] * 1e3:.1f} ms, timm ViT {enc['timm'] * 1e3:.1f} ms -> ratio "
          f"{enc['ours'] / enc['timm']:.2f} (our time / timm's at equal tokens and MLP FLOPs; SwiGLU, RMSNorm and "
          f"RoPE cost elementwise work that timm's GELU, LayerNorm and learned pos-embed do not)" + (
              f"; timm Eva with our blocks {enc['eva'] * 1e3:.1f} ms -> ratio {enc['ours'] / enc['eva']:.2f}"
              if "eva" in enc else ""))

    # Every step configuration below is timed interleaved with the others, in this one process.
    steps = {"full": cfg}
    subsets = cfg.batch_subsets()
    for objective in cfg.loss.enabled:
        only = [f"loss.{o}={'true' if o == objective else 'false'}" for o in ("clip", "ssl", "rec")]
        steps[objective] = load_config(args.config, [*args.set, f"runs_root={tmp}", *only,
                                                     f"train.batch_size={subsets[objective]}"])
    if not args.no_compile:
        steps["compiled"] = load_config(args.config, [*args.set, f"runs_root={tmp}", "train.compile=true"])
    t0 = time.perf_counter()
    t, flops = interleaved_steps(steps, args.repeats, tmp)
    full = t["full"]
    bf16 = uses_bf16(device, cfg.train.precision)
    dtype = torch.bfloat16 if bf16 else torch.float32
    peak = measure_matmul_flops(device, dtype)
    achieved = flops / full
    print(f"(b) VTP step: {full:.3f} s, {flops / 1e9:.1f} GFLOP -> {achieved / 1e9:.1f} GFLOP/s; "
          f"{str(dtype).removeprefix('torch.')} matmul {peak / 1e9:.1f} GFLOP/s -> utilisation vs matmul "
          f"{achieved / peak:.1%} ({len(steps)} step configurations interleaved, {time.perf_counter() - t0:.0f} s)")
    declared = device_peak(device, bf16, cfg.train.peak_tflops)
    if declared.metric == "mfu":
        print(f"    MFU {achieved / declared.flops:.1%} against {declared.flops / 1e12:.0f} TFLOP/s "
              f"({declared.source})")
    parts = {k: t[k] for k in cfg.loss.enabled}
    total = sum(parts.values())
    listing = ", ".join(f"{k} {v:.3f} s" for k, v in parts.items())
    print(f"(c) three-objective step {full:.3f} s vs sum of parts {total:.3f} s ({listing}) -> ratio "
          f"{full / total:.2f}")
    if "compiled" in t:
        print(f"(d) compiled step (train.compile: true) {t['compiled']:.3f} s vs eager {full:.3f} s -> speed-up "
              f"{full / t['compiled']:.2f}x, utilisation vs matmul {flops / t['compiled'] / peak:.1%} (the eager "
              f"step's FLOPs)")

if __name__ == "__main__":
    main()
