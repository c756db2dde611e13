"""The DiT generator: shapes, adaLN-Zero initialisation, label dropout, overfitting, meta build, checkpointing,
the size registry and its measured parameters / MACs against the DiT paper."""
from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from vtp.diffusion.flow import flow_matching_loss, interpolate, velocity_target
from vtp.models.dit import DiT
from vtp.models.flops import DIT_CONVENTION, measure_dit
from vtp.models.registry import DIT_SIZES, get_dit_spec

TINY = get_dit_spec("dit-tiny")


def batch(b: int = 4, c: int = 8, side: int = 4, classes: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, side, side, generator=g), torch.rand(b, generator=g), torch.randint(0, classes, (b,),
                                                                                                   generator=g)


def randomized(model: DiT, seed: int = 0) -> DiT:
    """Leave the zero init so outputs depend on every input (the init itself is tested separately)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("spec, side", [(TINY, 4), (replace(TINY, patch=2), 8), (replace(TINY, rope=False), 4),
                                        (replace(TINY, qk_norm=True, sincos_pos=False), 4)])
def test_output_has_the_input_shape(spec, side):
    model = randomized(DiT(spec, 8, side, 10))
    x, t, y = batch(side=side)
    out = model(x, t, y)
    assert out.shape == x.shape and out.abs().sum() > 0
    assert model(x, torch.tensor(0.5), y).shape == x.shape  # a scalar t broadcasts over the batch


def test_adaln_zero_makes_blocks_identities_and_the_output_zero():
    model = DiT(TINY, 8, 4, 10)
    x, t, y = batch()
    seen = []
    for blk in model.blocks:
        blk.register_forward_hook(lambda m, args, out: seen.append(torch.equal(args[0], out)))
    assert torch.equal(model(x, t, y), torch.zeros_like(x))
    assert seen == [True] * TINY.depth


def test_label_dropout_sends_labels_to_the_null_class():
    model = randomized(DiT(replace(TINY, class_dropout=1.0), 8, 4, 10)).eval()
    x, t, y = batch()
    null = torch.full_like(y, model.null_label)
    assert model.null_label == 10 and model.y_embed.table.num_embeddings == 11
    assert torch.equal(model(x, t, y, force_drop=torch.ones(4, dtype=torch.bool)), model(x, t, null))
    assert not torch.equal(model(x, t, y), model(x, t, null))  # eval: no dropout
    keep_first = torch.tensor([False, True, True, True])
    mixed = model(x, t, y, force_drop=keep_first)
    assert torch.equal(mixed[0], model(x, t, y)[0]) and torch.equal(mixed[1:], model(x, t, null)[1:])
    model.train()  # class_dropout = 1: every label drops, drawn from the given generator
    assert torch.equal(model(x, t, y, generator=torch.Generator().manual_seed(0)), model(x, t, null))


def test_training_label_dropout_is_a_function_of_the_generator():
    model = randomized(DiT(replace(TINY, class_dropout=0.5), 8, 4, 10)).train()
    x, t, y = batch(b=32)
    run = lambda seed: model(x, t, y, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))


def test_tiny_dit_overfits_one_batch_of_flow_matching_targets():
    torch.manual_seed(0)
    model = DiT(TINY, 8, 4, 10)
    g = torch.Generator().manual_seed(0)
    data, noise = torch.randn(16, 8, 4, 4, generator=g), torch.randn(16, 8, 4, 4, generator=g)
    t, y = torch.rand(16, generator=g), torch.randint(0, 10, (16,), generator=g)
    x_t, target, keep = interpolate(data, noise, t), velocity_target(data, noise), torch.zeros(16, dtype=torch.bool)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    losses = []
    for _ in range(100):
        loss = flow_matching_loss(model(x_t, t, y, force_drop=keep), target, cosine=True)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 5, (losses[0], losses[-1])


def test_meta_device_build_matches_the_real_one():
    with torch.device("meta"):
        meta = DiT(get_dit_spec("dit-b/1"), 64, 16, 1000)
        out = meta(torch.zeros(2, 64, 16, 16), torch.zeros(2), torch.zeros(2, dtype=torch.long))
    assert out.device.type == "meta" and out.shape == (2, 64, 16, 16)
    real = DiT(get_dit_spec("dit-tiny"), 8, 4, 10)
    with torch.device("meta"):
        tiny_meta = DiT(get_dit_spec("dit-tiny"), 8, 4, 10)
    assert [(n, p.shape) for n, p in real.named_parameters()] == [(n, p.shape) for n, p in
                                                                   tiny_meta.named_parameters()]


def test_grad_checkpointing_gives_equal_gradients():
    plain = randomized(DiT(TINY, 8, 4, 10)).train()
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing()
    x, t, y = batch()
    for model in (plain, ckpt):
        model(x, t, y, generator=torch.Generator().manual_seed(0)).square().sum().backward()
    assert ckpt.grad_checkpointing
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-7), name


def test_bad_inputs_and_sizes_fail_with_the_reason():
    with pytest.raises(ValueError, match="patch 2 must divide the latent grid 5x5"):
        DiT(replace(TINY, patch=2), 8, 5, 10)
    model = DiT(TINY, 8, 4, 10)
    with pytest.raises(ValueError, match=r"expected latents \(B, 8, 4, 4\)"):
        model(torch.zeros(2, 4, 4, 4), torch.zeros(2), torch.zeros(2, dtype=torch.long))


def test_registry_lists_the_sizes_and_names_them_on_a_miss():
    assert {"dit-b/1", "dit-b/2", "dit-l/1", "dit-l/2", "dit-xl/1", "dit-xl/2", "dit-1p0b/1", "dit-tiny",
            "dit-cpu-s"} <= set(DIT_SIZES)
    xl = get_dit_spec("dit-xl/1")
    assert (xl.width, xl.depth, xl.heads, xl.patch, xl.mlp_hidden) == (1152, 28, 16, 1, 3072)
    with pytest.raises(KeyError, match="unknown DiT size 'dit-s/3'.*dit-b/1.*dit-xl/2"):
        get_dit_spec("dit-s/3")


def test_dit_xl_2_matches_the_dit_paper():
    """DiT-XL/2 on 32x32x4 SD-VAE latents: 675M parameters, 118.6 "Gflops" (= G multiply-accumulates). Ours is
    LightningDiT's block: its SwiGLU at 2/3 hidden costs DiT's GELU MLP exactly (8 w^2), and RoPE and the
    weightless norms are free, so the counts agree with the plain DiT; DiT's learned-sigma head adds 0.02M."""
    report = measure_dit(get_dit_spec("dit-xl/2"), 4, 32)
    dit = report["components"]["dit"]
    assert set(report) == {"name", "latent", "convention", "components", "total"}
    assert report["convention"] == DIT_CONVENTION and report["latent"] == [4, 32, 32]
    assert dit == report["total"] and dit["flops"] == 2 * dit["macs"]
    assert abs(dit["params"] / 675e6 - 1) < 0.01, dit["params"]
    assert abs(dit["macs"] / 118.6e9 - 1) < 0.01, dit["macs"]


def test_measured_macs_match_the_closed_form():
    """dit-tiny on 4x4x8: per block 16 tokens x (qkv 3w^2 + proj w^2 + SwiGLU 3wh) + attention 2 T^2 w + adaLN
    6w^2 once; plus patch embed, timestep MLP (256w + w^2), final adaLN 2w^2 and output w*C."""
    w, h, tok, c = 64, TINY.mlp_hidden, 16, 8
    block = tok * (4 * w * w + 3 * w * h) + 2 * tok * tok * w + 6 * w * w
    expected = 2 * block + tok * c * w + (256 * w + w * w) + 2 * w * w + tok * w * c
    report = measure_dit(TINY, c, 4, num_classes=10)
    assert report["total"]["macs"] == expected
    assert report["total"]["params"] == sum(p.numel() for p in DiT(TINY, c, 4, 10).parameters())
