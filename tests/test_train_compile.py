"""`train.compile: true`: the transformer blocks are compiled in place and train to the eager step's losses."""
from __future__ import annotations

import json

import pytest
import torch

from vtp.train.pretrain import run_pretrain
from vtp.train.setup import compile_blocks

from train_utils import tiny_config, tiny_loader


def _losses(cfg) -> list[dict]:
    rows = (cfg.run_dir / "tokenizer" / "dvclive" / "plots" / "metrics").glob("*.tsv")
    return {p.stem: [float(line.split("\t")[-1]) for line in p.read_text().splitlines()[1:]]
            for p in rows if p.stem in ("loss", "clip", "dino", "ibot", "l1")}


def test_compiled_blocks_train_to_the_eager_losses(tmp_path):
    torch._dynamo.reset()
    eager = tiny_config(tmp_path / "eager", "vtp", steps=3)
    compiled = tiny_config(tmp_path / "compiled", "vtp", "train.compile=true", steps=3)
    run_pretrain(eager, resume=False, loader=tiny_loader(eager))
    before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    run_pretrain(compiled, resume=False, loader=tiny_loader(compiled))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > before  # something was compiled
    a, b = _losses(eager), _losses(compiled)
    assert set(a) == {"loss", "clip", "dino", "ibot", "l1"} and all(len(v) == 3 for v in a.values())
    for name in a:  # fp32 on CPU: inductor reorders reductions, nothing more
        assert b[name] == pytest.approx(a[name], rel=1e-3, abs=1e-4), name
    saved = json.loads((compiled.run_dir / "tokenizer" / "run.json").read_text())
    assert saved["config"]["train"]["compile"] is True


def test_compile_blocks_keeps_parameter_names_and_a_model_without_blocks_is_refused(tmp_path):
    from vtp import dist as vdist
    from vtp.models.layers import ViTStack
    from vtp.models.registry import ViTSpec
    from vtp.train.setup import wrap_model

    stack = ViTStack(ViTSpec(width=32, depth=2, heads=2), num_prefix=1)
    names = [n for n, _ in stack.named_parameters()]
    assert compile_blocks(stack) == 2 and [n for n, _ in stack.named_parameters()] == names
    cfg = tiny_config(tmp_path, "vtp", "train.compile=true")
    with pytest.raises(ValueError, match="train.compile: Linear has no transformer blocks"):
        wrap_model(torch.nn.Linear(2, 2), cfg, vdist.init_distributed())



def _block(kind: str):
    """A block and its inputs after x: VTP's (RMSNorm, SwiGLU, 2D RoPE, q/k norm; 1 prefix token + a 2x3 grid),
    ViTok's (LayerNorm, gated GELU, 1D RoPE over every token) or the DiT's (affine-free RMSNorm, adaLN)."""
    from vtp.models.dit import DiTBlock
    from vtp.models.layers import Block, Rope
    from vtp.models.registry import ViTSpec, get_dit_spec, vitok_vit

    if kind == "vtp":
        return Block(ViTSpec(width=32, depth=1, heads=2, qk_norm=True), 1), torch.randn(2, 7, 32), \
            (Rope(16, 100.0)((2, 3)),)
    if kind == "vitok":
        return Block(vitok_vit(32, 1, 2), 0, rotate_half=False), torch.randn(2, 7, 32), \
            (Rope(16, 1e4, "vitok-1d", num_prefix=1)((2, 3)),)
    dit = get_dit_spec("dit-tiny")
    return DiTBlock(dit), torch.randn(2, 6, dit.width), \
        (torch.randn(2, dit.width), Rope(dit.head_dim, 100.0)((2, 3)))


@pytest.mark.parametrize("kind", ["vtp", "vitok", "dit"])
def test_a_compiled_block_is_one_graph_with_the_eager_values_and_gradients(kind):
    """The hand-written autograd functions (gate, RMSNorm, RoPE) step aside under torch.compile: their `out=`
    writes broke every block's graph. `fullgraph=True` raises on any break; aot_eager traces forward and backward
    as Inductor does, without its compile time."""
    torch._dynamo.reset()  # earlier tests may have spent the blocks' recompile budget
    torch.manual_seed(0)
    block, x, rest = _block(kind)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    outs = []
    for fn in (block, compiled):
        xi = x.clone().requires_grad_()
        y = fn(xi, *rest)
        outs.append((y, *torch.autograd.grad(y.square().sum(), [xi, *block.parameters()])))
    for a, b in zip(*outs):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
