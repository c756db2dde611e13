"""Encoder speed against timm's VisionTransformer of the same width, depth, heads, tokens and MLP FLOPs.

Forward + backward + one AdamW step, interleaved (ours, theirs, ours, ...) and best of `--repeats`, so a noisy
machine slows both alike; the figure is the ratio ours / theirs (below 1.0: we are faster). The reference gets
the same prefix tokens (CLS + registers) and an MLP with the FLOPs of ours: a gated MLP of hidden width h does
3 matrices (w x 2h packed, h x w), i.e. the FLOPs of a plain MLP of hidden 1.5 h. It has a learned position
embedding where ours has RoPE: that cost is ours to carry. Both are also timed under torch.compile (ours with its
blocks compiled in place, as `train.compile: true` does; timm's forward_features), compiled against compiled.

    python benchmarks/bench_encoder.py [--shapes w192-d4-p8-32px,...] [--repeats 5] [--no-compile]
"""
from __future__ import annotations

import argparse
import time

import timm
import torch

from vtp.models.encoder import VisionEncoder
from vtp.models.registry import ViTSpec, vtp_vit
from vtp.train.runtime import autocast

# name -> (spec, patch, resolution, batch): the shapes the issue tracks (issue 15), demo's first.
SHAPES = {
    "w192-d4-p8-32px": (vtp_vit(192, 4, 3), 8, 32, 64),
    "w192-d4-p8-64px": (vtp_vit(192, 4, 3), 8, 64, 64),
    "w384-d12-p8-64px": (vtp_vit(384, 12, 6), 8, 64, 16),
    "w384-d12-p16-256px": (vtp_vit(384, 12, 6), 16, 256, 8),
}


def reference_vit(spec: ViTSpec, patch: int, resolution: int) -> torch.nn.Module:
    """timm's ViT with our tokens and MLP FLOPs (module docstring)."""
    hidden = spec.mlp_hidden * (1.5 if spec.ffn in ("swiglu", "geglu") else 1.0)
    return timm.models.vision_transformer.VisionTransformer(
        img_size=resolution, patch_size=patch, embed_dim=spec.width, depth=spec.depth, num_heads=spec.heads,
        mlp_ratio=hidden / spec.width, qkv_bias=spec.qkv_bias, reg_tokens=spec.registers, num_classes=0,
        global_pool="token")


def train_step(model: torch.nn.Module, forward, x: torch.Tensor, precision: str):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)

    def step():
        with autocast(x.device, precision):
            out = forward(x)
        out.float().sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def compare(spec: ViTSpec, patch: int, resolution: int, batch: int, repeats: int, compiled: bool,
            device: torch.device | str = "cpu", precision: str = "auto") -> dict:
    """Best seconds per training step of each variant, timed interleaved (synchronised on CUDA); `precision` as
    train.precision (auto: bf16 autocast on CUDA)."""
    from vtp.train.setup import compile_blocks

    device = torch.device(device)
    torch.manual_seed(0)
    x = torch.randn(batch, 3, resolution, resolution, device=device)
    ours = VisionEncoder(spec, patch).to(device)
    theirs = reference_vit(spec, patch, resolution).to(device)
    steps = {"ours": train_step(ours, lambda t: _ours_out(ours, t), x, precision),
             "timm": train_step(theirs, theirs.forward_features, x, precision)}
    if compiled:
        ours_c = VisionEncoder(spec, patch).to(device)
        theirs_c = reference_vit(spec, patch, resolution).to(device)
        ours_c.load_state_dict(ours.state_dict())
        theirs_c.load_state_dict(theirs.state_dict())
        compile_blocks(ours_c)
        steps["ours compiled"] = train_step(ours_c, lambda t: _ours_out(ours_c, t), x, precision)
        steps["timm compiled"] = train_step(theirs_c, torch.compile(theirs_c.forward_features), x, precision)
    for step in steps.values():
        step()  # warm-up (and compilation)
    best = dict.fromkeys(steps, float("inf"))
    for _ in range(repeats):
        for name, step in steps.items():
            sync(device)
            t0 = time.perf_counter()
            step()
            sync(device)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _ours_out(model: VisionEncoder, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out["patches"].sum() + out["cls"].sum()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, of: {', '.join(SHAPES)}")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true", help="eager only (compilation takes ~10-40 s a shape)")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, timm {timm.__version__}, {torch.get_num_threads()} threads; fwd+bwd+AdamW, "
          f"interleaved, best of {args.repeats}; ratio = our time / timm's (below 1: we are faster)")
    head = f"{'shape':22s} {'batch':>5s} {'ours ms':>9s} {'timm ms':>9s} {'ratio':>6s}"
    print(head + ("" if args.no_compile else f" {'compiled: ours':>15s} {'timm':>9s} {'ratio':>6s}"))
    for name in args.shapes.split(","):
        spec, patch, res, batch = SHAPES[name]
        t = compare(spec, patch, res, batch, args.repeats, not args.no_compile)
        line = f"{name:22s} {batch:5d} {t['ours'] * 1e3:9.1f} {t['timm'] * 1e3:9.1f} {t['ours'] / t['timm']:6.2f}"
        if not args.no_compile:
            line += (f" {t['ours compiled'] * 1e3:15.1f} {t['timm compiled'] * 1e3:9.1f} "
                     f"{t['ours compiled'] / t['timm compiled']:6.2f}")
        print(line, flush=True)


if __name__ == "__main__":
    main()
