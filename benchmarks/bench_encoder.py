"""Encoder speed against timm's VisionTransformer of the same width, depth, heads, tokens and MLP FLOPs, and
against timm's Eva built as our architecture (what one would otherwise train a Llama-style ViT with).

Forward + backward + one AdamW step, interleaved (ours, theirs, ours, ...) and best of `--repeats`, so a noisy
machine slows both alike; the figure is the ratio ours / theirs (below 1.0: we are faster). The reference gets
the same prefix tokens (CLS + registers) and an MLP with the FLOPs of ours: a gated MLP of hidden width h does
3 matrices (w x 2h packed, h x w), i.e. the FLOPs of a plain MLP of hidden 1.5 h. It has a learned position
embedding where ours has RoPE: that cost is ours to carry. Both are also timed under torch.compile (ours with its
blocks compiled in place, as `train.compile: true` does; timm's forward_features), compiled against compiled.
The second reference, timm's `Eva` (its DINOv3 port's layout: RMSNorm, SwiGLU of our hidden width, DINOv3 2D
RoPE, CLS + registers, no position embedding), has our blocks op for op: there the difference is the
implementation alone.

    python benchmarks/bench_encoder.py [--shapes w192-d4-p8-32px,...] [--repeats 5] [--no-compile]
    python benchmarks/bench_encoder.py --device cuda --batch-mult 8   # bf16 autocast; gpu.sh runs it
"""
from __future__ import annotations

import argparse
import copy
import time
from functools import partial

import timm
import torch

from vtp.models.encoder import VisionEncoder
from vtp.models.registry import ViTSpec, vtp_vit
from vtp.train.optim import build_optimizer
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


def eva_matches(spec: ViTSpec) -> bool:
    """Whether timm's Eva can be built with these blocks (SwiGLU and DINOv3 RoPE; either norm)."""
    return spec.ffn == "swiglu" and spec.rope == "dinov3-2d"


def reference_eva(spec: ViTSpec, patch: int, resolution: int) -> torch.nn.Module:
    """timm's Eva with our blocks (module docstring); q/k norms are the block norm, as ours."""
    if not eva_matches(spec):
        raise ValueError(f"reference_eva: needs SwiGLU and DINOv3 RoPE, got ffn {spec.ffn!r}, rope {spec.rope!r}")
    norm = partial(timm.layers.RmsNorm if spec.norm == "rmsnorm" else torch.nn.LayerNorm, eps=1e-5)
    return timm.models.eva.Eva(
        img_size=resolution, patch_size=patch, embed_dim=spec.width, depth=spec.depth, num_heads=spec.heads,
        qkv_bias=spec.qkv_bias, qk_norm=spec.qk_norm, init_values=spec.layerscale,
        mlp_ratio=spec.mlp_hidden / spec.width, swiglu_mlp=True, norm_layer=norm, use_abs_pos_emb=False,
        use_rot_pos_emb=True, rope_type="dinov3", rope_temperature=spec.rope_base, rope_rotate_half=True,
        num_reg_tokens=spec.registers, num_classes=0, global_pool="token")


def train_step(model: torch.nn.Module, forward, x: torch.Tensor, precision: str):
    opt = build_optimizer(model, lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05)  # the trainers' AdamW, both sides

    def step():
        with autocast(x.device, precision):
            out = forward(x)
        out.float().sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def compare(spec: ViTSpec, patch: int, resolution: int, batch: int, repeats: int, compiled: bool,
            device: torch.device | str = "cpu", precision: str = "auto") -> dict:
    """Best seconds per training step of each variant (ours, timm, eva where `eva_matches`, and each compiled),
    timed interleaved (synchronised on CUDA); `precision` as train.precision (auto: bf16 autocast on CUDA)."""
    from vtp.train.setup import compile_blocks

    device = torch.device(device)
    torch.manual_seed(0)
    x = torch.randn(batch, 3, resolution, resolution, device=device)
    ours = VisionEncoder(spec, patch).to(device)
    refs = {"timm": reference_vit(spec, patch, resolution).to(device)}
    if eva_matches(spec):
        refs["eva"] = reference_eva(spec, patch, resolution).to(device)
    steps = {"ours": train_step(ours, lambda t: _ours_out(ours, t), x, precision)}
    steps |= {name: train_step(m, m.forward_features, x, precision) for name, m in refs.items()}
    if compiled:
        ours_c = VisionEncoder(spec, patch).to(device)
        ours_c.load_state_dict(ours.state_dict())
        compile_blocks(ours_c)
        steps["ours compiled"] = train_step(ours_c, lambda t: _ours_out(ours_c, t), x, precision)
        for name, m in refs.items():
            m_c = copy.deepcopy(m)
            steps[f"{name} compiled"] = train_step(m_c, torch.compile(m_c.forward_features), x, precision)
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
    ap.add_argument("--device", default="cpu", help="cpu or cuda (bf16 autocast there, as train.precision auto)")
    ap.add_argument("--batch-mult", type=int, default=1, help="multiplies each shape's CPU-sized batch")
    args = ap.parse_args()
    where = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else \
        f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, timm {timm.__version__}, {where}; fwd+bwd+AdamW, "
          f"interleaved, best of {args.repeats}; /vit and /eva = our time / timm's VisionTransformer's and Eva's "
          f"(below 1: we are faster)")
    modes = [""] if args.no_compile else ["", " compiled"]
    heads = {m: f"ours{m} ms" for m in modes}
    print(f"{'shape':22s} {'batch':>5s}" + "".join(
        f" {heads[m]:>9s} {'vit ms':>8s} {'eva ms':>8s} {'/vit':>5s} {'/eva':>5s}" for m in modes))
    for name in args.shapes.split(","):
        spec, patch, res, batch = SHAPES[name]
        batch *= args.batch_mult
        t = compare(spec, patch, res, batch, args.repeats, not args.no_compile, device=args.device)
        line = f"{name:22s} {batch:5d}"
        for m in modes:
            ours, vit, eva = (t[k + m] * 1e3 for k in ("ours", "timm", "eva"))
            line += f" {ours:{max(9, len(heads[m]))}.1f} {vit:8.1f} {eva:8.1f} {ours / vit:5.2f} {ours / eva:5.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
