"""Parameters, MACs and FLOPs per image of each tokenizer component, measured on the meta device.

The model is built on `torch.device("meta")` (no memory, any size) and each component's forward runs
once under `torch.utils.flop_counter.FlopCounterMode`, which counts matmuls, convolutions and attention
(2 FLOPs per multiply-accumulate); norms, activations and softmax are not counted. ViTok's Table 1
"GFLOPs" are these MACs (METHOD.md 4.5); VTP's Table 1 uses 2 x params x tokens (attention excluded).

Components (batch of one):
- encoder:   patch embed + ViT trunk + final norm + bottleneck (mean), one image at `resolution`; its
             `blocks_flops` are the trunk's blocks alone
- decoder:   1x1 conv in + ViT blocks + norm + 1x1 conv out (+ pixel shuffle), one latent grid
- text:      the text tower + projection on one caption of `context_length` tokens
- clip_head: the image projection on one pooled feature (+ the logit scale parameter)
- dino_head: the DINO head on ONE token; a training step applies it to the CLS of every crop and to
             the masked patches, so multiply by the tokens actually projected.
`total` sums the components' params, macs and flops (parameters: the whole model).

`measure_dit` reports one component, `dit`: one forward (one NFE of a sampler, a third of a training step's
fwd+bwd) on one latent, conditioning included. The DiT paper's "Gflops" are these MACs (DiT-XL/2: 118.6).
"""
from __future__ import annotations

import copy
import functools

import torch
from torch import nn
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from vtp.models.registry import DiTSpec, TokenizerSpec

__all__ = ["FlopCounterMode", "measure", "measure_dit"]  # import the counter from here: it then counts CPU attention

CONVENTION = "flops = 2 x MACs per image, attention included, measured with torch.utils.flop_counter"
DIT_CONVENTION = "flops = 2 x MACs per latent and forward (one NFE), attention included, torch.utils.flop_counter"


# torch's counter knows the CUDA attention kernels but not the CPU flash kernel F.scaled_dot_product_attention
# dispatches to on CPU: without these, a CPU step counts no attention at all while the meta-device estimate does.
_aten = torch.ops.aten
for _cpu, _cuda in ((_aten._scaled_dot_product_flash_attention_for_cpu, _aten._scaled_dot_product_flash_attention),
                    (_aten._scaled_dot_product_flash_attention_for_cpu_backward,
                     _aten._scaled_dot_product_flash_attention_backward)):
    if _cpu not in flop_counter.flop_registry:  # a later torch may register it itself
        flop_counter.register_flop_formula(_cpu, get_raw=True)(flop_counter.flop_registry[_cuda])


def _count(modules: list[nn.Module | nn.Parameter | None], run, blocks: str | None = None) -> dict[str, int]:
    """Parameters, MACs and FLOPs of `run()`; with `blocks` (a module path as the counter names it), also that
    module's FLOPs as `blocks_flops` (stochastic depth skips the blocks' work for dropped samples)."""
    params = sum(m.numel() if isinstance(m, nn.Parameter) else sum(p.numel() for p in m.parameters())
                 for m in modules if m is not None)
    with FlopCounterMode(display=False) as counter:
        run()
    flops = int(counter.get_total_flops())
    out = {"params": params, "macs": flops // 2, "flops": flops}
    if blocks is not None:
        out["blocks_flops"] = int(sum(counter.get_flop_counts()[blocks].values()))
    return out


@functools.lru_cache(maxsize=64)
def _measure(spec: TokenizerSpec, resolution: int) -> dict:
    from vtp.models.tokenizer import Tokenizer  # torch-heavy; flops is imported lazily by the CLI

    if resolution % spec.patch:
        raise ValueError(f"resolution: expected a multiple of the patch size {spec.patch}, got {resolution}")
    with torch.device("meta"):
        tok = Tokenizer.from_spec(spec).eval()
        image = torch.zeros(1, 3, resolution, resolution)
        latent = torch.zeros(1, *spec.latent_shape(resolution))
        feature = torch.zeros(1, spec.encoder.width)
    comps = {
        "encoder": _count([tok.encoder, tok.bottleneck], lambda: tok.encode(image),
                          blocks=f"{type(tok.encoder).__name__}.blocks"),
        "decoder": _count([tok.decoder], lambda: tok.decode(latent)),
    }
    if tok.text is not None:
        tokens = torch.zeros(1, spec.text.context_length, dtype=torch.long, device="meta")
        comps["text"] = _count([tok.text], lambda: tok.text(tokens))
        comps["clip_head"] = _count([tok.clip_proj, tok.logit_scale], lambda: tok.clip_proj(feature))
    if tok.dino_head is not None:
        comps["dino_head"] = _count([tok.dino_head], lambda: tok.dino_head(feature))
    total = {k: sum(c[k] for c in comps.values()) for k in ("params", "macs", "flops")}
    return {"name": spec.name, "resolution": resolution, "convention": CONVENTION, "components": comps,
            "total": total}


@torch.no_grad()
def measure(spec: TokenizerSpec, resolution: int) -> dict:
    """{"name", "resolution", "convention", "components": {name: {"params", "macs", "flops"}}, "total"}.

    Semantic heads are measured reading full-width features (bottleneck_ae_only=True, the released VTP).
    """
    return copy.deepcopy(_measure(spec, resolution))


@functools.lru_cache(maxsize=64)
def _measure_dit(spec: DiTSpec, in_channels: int, grid: tuple[int, int], num_classes: int) -> dict:
    from vtp.models.dit import DiT

    with torch.device("meta"):
        model = DiT(spec, in_channels, grid, num_classes).eval()
        x = torch.zeros(1, in_channels, *grid)
        t = torch.zeros(1)
        y = torch.zeros(1, dtype=torch.long)
    comps = {"dit": _count([model], lambda: model(x, t, y))}
    return {"name": spec.name, "latent": [in_channels, *grid], "convention": DIT_CONVENTION, "components": comps,
            "total": dict(comps["dit"])}


@torch.no_grad()
def measure_dit(spec: DiTSpec, in_channels: int, grid: int | tuple[int, int], num_classes: int = 1000) -> dict:
    """{"name", "latent": [C, H, W], "convention", "components": {"dit": {"params", "macs", "flops"}}, "total"}."""
    grid = (grid, grid) if isinstance(grid, int) else tuple(grid)
    return copy.deepcopy(_measure_dit(spec, in_channels, grid, num_classes))
