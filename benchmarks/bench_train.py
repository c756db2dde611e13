"""Training-speed benchmark. Every figure is a ratio against a reference measured in the same run:

(a) our encoder forward+backward vs timm's VisionTransformer of the same width, depth, tokens and MLP FLOPs
    (bench_encoder.reference_vit; bench_encoder.py runs the issue's shapes, eager and compiled);
(b) the full VTP step's achieved FLOP/s vs a large matmul's FLOP/s in this process, in the step's own dtype
    (bf16 autocast on CUDA), and on a GPU with a datasheet peak (A100/H100/H200) or train.peak_tflops, its MFU;
(c) the three-objective step vs the sum of its parts (CLIP-only, SSL-only and reconstruction-only steps on
    the same subset sizes): the overhead of running them together;
(d) the step with `train.compile: true` (the blocks compiled in place) vs the eager step, interleaved
    (--no-compile skips it).

--profile instead prints where one VTP step's time goes: the step's named ranges (vtp.train.runtime.part: views
and masks, teacher, SSL targets, CLIP image and text towers and loss, SSL student, reconstruction and its loss,
backward, optimizer, EMA) as shares of the fastest of a few steps (on CUDA each part synchronises: exact
attribution, no overlap).

    python benchmarks/bench_train.py [--config vtp] [--set key=value ...] [--repeats 5]
    python benchmarks/bench_train.py --set model.size=vtp-b-d64 --set data.resolution=256 ...   # on a GPU: gpu.sh
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
from vtp.train.runtime import autocast, timing_parts, uses_bf16

from bench_encoder import reference_vit

DEVICE = vdist.init_distributed().device


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def make_trainer(cfg, tmp: str) -> tuple[Pretrainer, object]:
    res = cfg.data.resolution
    g = torch.Generator().manual_seed(0)
    images = torch.rand(256, 3, res, res, generator=g) * 2 - 1
    captions = [f"a small shape number {i} on a plain background" for i in range(256)]
    trainer = Pretrainer(cfg, vdist.init_distributed(), resume=False,
                         loader=memory_loader(images, captions, cfg.train.batch_size // cfg.train.grad_accum))
    return trainer, stream(trainer.make_loader(), 0, 0)


def bench_encoder(cfg, repeats: int) -> tuple[float, float]:
    from vtp.models.tokenizer import Tokenizer

    spec = cfg.model.spec()
    tok = Tokenizer.from_spec(spec).to(DEVICE)
    ref = reference_vit(spec.encoder, spec.patch, cfg.data.resolution).to(DEVICE)
    x = torch.randn(cfg.train.batch_size, 3, cfg.data.resolution, cfg.data.resolution, device=DEVICE)

    def ours():
        with autocast(DEVICE, cfg.train.precision):
            out = tok.trunk(x)
        (out["cls"].float().sum() + out["patches"].float().sum()).backward()

    def theirs():
        with autocast(DEVICE, cfg.train.precision):
            y = ref.forward_features(x)
        y.float().sum().backward()

    return timed(ours, repeats), timed(theirs, repeats)


def step_time(cfg, repeats: int, tmp: str) -> tuple[float, float]:
    trainer, batches = make_trainer(cfg, tmp)
    trainer._count_flops([next(batches) for _ in range(trainer.grad_accum)])
    return timed(lambda: trainer._train_step(batches), repeats), trainer.flops_per_step_device


def interleaved_steps(cfgs: dict, repeats: int, tmp: str, warmup: int = 3) -> dict[str, float]:
    """Best step time of each configuration, the trainers stepped in turn (a noisy machine slows all alike);
    `warmup` steps each first (compilation, and recompilation for the step's other shapes)."""
    runs = {name: make_trainer(cfg, tmp) for name, cfg in cfgs.items()}
    for trainer, batches in runs.values():
        for _ in range(warmup):
            trainer._train_step(batches)
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, (trainer, batches) in runs.items():
            sync()
            t0 = time.perf_counter()
            trainer._train_step(batches)
            sync()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def profile(cfg, steps: int, tmp: str) -> None:
    """The share of each named part of the step, nested parts indented under the part that contains them."""
    trainer, batches = make_trainer(cfg, tmp)
    for _ in range(2):  # warm-up (the first step also counts FLOPs)
        trainer._train_step(batches)
    best: dict[str, float] | None = None
    best_step = float("inf")
    for _ in range(steps):  # the fastest of `steps` steps, timed whole and by part
        with timing_parts() as times:
            sync()
            t0 = time.perf_counter()
            trainer._train_step(batches)
            sync()
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
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="print the step's time per part instead")
    ap.add_argument("--no-compile", action="store_true", help="skip (d), the compiled step")
    args = ap.parse_args()
    os.environ.setdefault("VTP_NO_PROGRESS", "1")
    tmp = "/tmp/vtp-bench-runs"
    cfg = load_config(args.config, [*args.set, f"runs_root={tmp}"])
    device = DEVICE
    print(f"device {device}, torch threads {torch.get_num_threads()}, config {cfg.name}: {cfg.model.size} at "
          f"{cfg.data.resolution}px, batch {cfg.train.batch_size}, subsets {cfg.batch_subsets()}")

    if args.profile:
        return profile(cfg, args.repeats, tmp)
    ours, theirs = bench_encoder(cfg, args.repeats)
    print(f"(a) encoder fwd+bwd: ours {ours * 1e3:.1f} ms, timm ViT {theirs * 1e3:.1f} ms -> ratio "
          f"{ours / theirs:.2f} (our time / timm's; SwiGLU, RMSNorm and RoPE cost elementwise work that timm's GELU, "
          f"LayerNorm and learned pos-embed do not)")

    full, flops = step_time(cfg, args.repeats, tmp)
    bf16 = uses_bf16(device, cfg.train.precision)
    dtype = torch.bfloat16 if bf16 else torch.float32
    peak = measure_matmul_flops(device, dtype)
    achieved = flops / full
    print(f"(b) VTP step: {full:.3f} s, {flops / 1e9:.1f} GFLOP -> {achieved / 1e9:.1f} GFLOP/s; "
          f"{str(dtype).removeprefix('torch.')} matmul {peak / 1e9:.1f} GFLOP/s -> utilisation vs matmul "
          f"{achieved / peak:.1%}")
    declared = device_peak(device, bf16, cfg.train.peak_tflops)
    if declared.metric == "mfu":
        print(f"    MFU {achieved / declared.flops:.1%} against {declared.flops / 1e12:.0f} TFLOP/s "
              f"({declared.source})")

    parts = {}
    subsets = cfg.batch_subsets()
    for objective in cfg.loss.enabled:
        only = [f"loss.{o}={'true' if o == objective else 'false'}" for o in ("clip", "ssl", "rec")]
        part_cfg = load_config(args.config, [*args.set, f"runs_root={tmp}", *only,
                                             f"train.batch_size={subsets[objective]}"])
        parts[objective] = step_time(part_cfg, args.repeats, tmp)[0]
    total = sum(parts.values())
    listing = ", ".join(f"{k} {v:.3f} s" for k, v in parts.items())
    print(f"(c) three-objective step {full:.3f} s vs sum of parts {total:.3f} s ({listing}) -> ratio "
          f"{full / total:.2f}")
    if not args.no_compile:
        compiled_cfg = load_config(args.config, [*args.set, f"runs_root={tmp}", "train.compile=true"])
        t0 = time.perf_counter()
        t = interleaved_steps({"eager": cfg, "compiled": compiled_cfg}, args.repeats, tmp)
        print(f"(d) compiled step (train.compile: true) {t['compiled']:.3f} s vs eager {t['eager']:.3f} s, "
              f"interleaved -> speed-up {t['eager'] / t['compiled']:.2f}x, utilisation vs matmul "
              f"{flops / t['compiled'] / peak:.1%} (eager here {flops / t['eager'] / peak:.1%}; the eager step's "
              f"FLOPs; {time.perf_counter() - t0:.0f} s with compilation)")


if __name__ == "__main__":
    main()
