"""DiT benchmark. Every figure is a ratio or a rate measured against a reference in the same run:

(a) our DiT training step (fwd + bwd + AdamW) vs diffusers' DiTTransformer2DModel of the same width, depth,
    heads, patch, channels and token count, timed interleaved, best of N: ours/theirs throughput;
(b) achieved FLOP/s of our step (fwd + bwd matmuls counted by FlopCounterMode) vs a same-process fp32 matmul
    (and a bf16 one under --dtype bf16);
(c) sampling latents/s and NFE per solver (Euler, Heun, dopri5, Euler with guidance) for the same DiT.

    python benchmarks/bench_dit.py [--threads 1]                     # CPU: dit-cpu-s on 8x8x16 latents
    python benchmarks/bench_dit.py --device cuda --dtype bf16        # GPU: dit-b/1 on 16x16x64 latents
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from vtp.diffusion.samplers import SamplerSpec, sample  # noqa: E402
from vtp.models.dit import DiT  # noqa: E402
from vtp.models.registry import get_dit_spec  # noqa: E402
from vtp.train.accounting import measure_matmul_flops  # noqa: E402
from vtp.train.optim import build_optimizer  # noqa: E402

DEFAULTS = {"cpu": ("dit-cpu-s", 16, 8, 16), "cuda": ("dit-b/1", 64, 16, 64)}  # size, channels, grid, batch
CLASSES = 1000


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_times(fns: dict, repeats: int, device: torch.device, warmup: bool = True) -> dict[str, float]:
    """Best wall time of each function, run interleaved so drifting machine load hits all of them alike."""
    for fn in fns.values() if warmup else ():
        fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def train_step(model: nn.Module, forward, batch: tuple, amp) -> callable:
    x, t, y, target = batch
    opt = build_optimizer(model, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0)  # the trainers' AdamW, both sides

    def step():
        with amp():
            out = forward(model, x, t, y)
        loss = (out.float() - target).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def step_flops(step) -> float:
    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--size", help="a DiT registry name (default: dit-cpu-s on CPU, dit-b/1 on CUDA)")
    ap.add_argument("--channels", type=int)
    ap.add_argument("--grid", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, help="torch CPU threads (1 is steadier on a machine others share)")
    ap.add_argument("--sample-steps", type=int, default=16, help="Euler steps; Heun gets half (equal NFE)")
    args = ap.parse_args()
    from diffusers import DiTTransformer2DModel

    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    defaults = dict(zip(("size", "channels", "grid", "batch"), DEFAULTS[device.type], strict=True))
    size, channels, grid, bs = (getattr(args, k) or v for k, v in defaults.items())
    spec = get_dit_spec(size)
    bf16 = args.dtype == "bf16"
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    print(f"device {device}, {args.dtype}, torch threads {torch.get_num_threads()}; {size} (width {spec.width}, depth "
          f"{spec.depth}, heads {spec.heads}, patch {spec.patch}) on {channels}x{grid}x{grid} latents, batch {bs}")

    g = torch.Generator().manual_seed(0)
    shape = (bs, channels, grid, grid)
    batch = (torch.randn(shape, generator=g), torch.rand(bs, generator=g),
             torch.randint(0, CLASSES, (bs,), generator=g), torch.randn(shape, generator=g))
    batch = tuple(v.to(device) for v in batch)  # x_t, t, labels, target velocity
    ours = DiT(spec, channels, grid, CLASSES).to(device).train()
    theirs = DiTTransformer2DModel(num_attention_heads=spec.heads, attention_head_dim=spec.head_dim,
                                   in_channels=channels, out_channels=channels, num_layers=spec.depth,
                                   sample_size=grid, patch_size=spec.patch, num_embeds_ada_norm=CLASSES).to(device)
    steps = {"ours": train_step(ours, lambda m, x, t, y: m(x, t, y), batch, amp),
             "diffusers": train_step(theirs.train(), lambda m, x, t, y: m(x, t, y, return_dict=False)[0], batch, amp)}
    flops = {k: step_flops(fn) for k, fn in steps.items()}
    best = best_times(steps, args.repeats, device)
    params = {k: sum(p.numel() for p in m.parameters()) / 1e6 for k, m in (("ours", ours), ("diffusers", theirs))}
    for k in steps:
        print(f"    {k:9s} {params[k]:7.1f}M params, {flops[k] / 1e9:8.1f} GFLOP/step, {best[k] * 1e3:8.1f} ms/step, "
              f"{bs / best[k]:8.1f} latents/s")
    print(f"(a) training step throughput ours/diffusers = {best['diffusers'] / best['ours']:.2f} "
          f"(FLOP ratio {flops['ours'] / flops['diffusers']:.2f}; diffusers re-embeds t and y in every block)")

    achieved = flops["ours"] / best["ours"]
    refs = {"fp32": measure_matmul_flops(device, torch.float32)}
    if bf16:
        refs["bf16"] = measure_matmul_flops(device, torch.bfloat16, sizes=(4096, 8192))
    listing = ", ".join(f"{k} matmul {v / 1e9:.1f} GFLOP/s -> {achieved / v:.1%}" for k, v in refs.items())
    print(f"(b) our step achieves {achieved / 1e9:.1f} GFLOP/s; {listing}")

    with torch.no_grad():  # a trained-looking field: undo the zero init, or every solver sees v = 0
        for m in [*(blk.adaLN[-1] for blk in ours.blocks), ours.final.adaLN[-1], ours.final.linear]:
            nn.init.normal_(m.weight, std=0.02)
    ours.eval()
    noise, labels = batch[0], batch[2]
    n = args.sample_steps
    specs = {f"euler-{n}": SamplerSpec("euler", n), f"heun-{n // 2}": SamplerSpec("heun", n // 2),
             "dopri5": SamplerSpec("dopri5"), f"euler-{n} cfg 4": SamplerSpec("euler", n, cfg_scale=4.0)}

    def model_fn(x, t, y):
        with amp():
            return ours(x, t, y)

    nfe = {}
    runs = {k: (lambda k=k, s=s: nfe.__setitem__(k, sample(model_fn, noise, labels, s, ours.null_label).nfe))
            for k, s in specs.items()}
    sample_best = best_times(runs, max(1, args.repeats // 2), device, warmup=False)  # the step warmed the kernels
    listing = ", ".join(f"{k}: {bs / sample_best[k]:.1f} latents/s ({nfe[k]} NFE)" for k in specs)
    print(f"(c) sampling {bs} latents: {listing}")


if __name__ == "__main__":
    main()
