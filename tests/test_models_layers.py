"""ViT building blocks: 2D axial RoPE, sample-level stochastic depth, block options."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from timm.layers.pos_embed_sincos import apply_rot_embed_cat

from vtp.models.layers import AxialRope, ViTStack, make_ffn, make_norm, sample_drop_residual
from vtp.models.registry import ViTSpec


def reference_rope(h: int, w: int, head_dim: int, base: float) -> torch.Tensor:
    """METHOD.md 1.1 written out: coords (i + 0.5) / n * 2 - 1 per axis, head_dim/4 periods
    base^(2i / (head_dim/2)) per axis, angle 2*pi*coord/period; [sin | cos] in rotate-half layout."""
    periods = base ** (2 * torch.arange(head_dim // 4, dtype=torch.float64) / (head_dim // 2))
    ys = (torch.arange(h, dtype=torch.float64) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, dtype=torch.float64) + 0.5) / w * 2 - 1
    coords = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).reshape(h * w, 2)
    angles = (2 * math.pi * coords[:, :, None] / periods).reshape(h * w, head_dim // 2)
    angles = torch.cat([angles, angles], dim=-1)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).float()


@pytest.mark.parametrize("grid", [(4, 4), (2, 6), (7, 3)])
def test_rope_table_matches_the_published_recipe(grid):
    table = AxialRope(head_dim=32, base=100.0)(grid)
    assert table.shape == (grid[0] * grid[1], 64)
    torch.testing.assert_close(table, reference_rope(*grid, 32, 100.0), atol=1e-5, rtol=0)


def test_rope_tables_are_cached_per_grid():
    rope = AxialRope(head_dim=16, base=100.0)
    assert rope((4, 4)) is rope((4, 4))
    assert rope((2, 2)).shape[0] == 4


def test_a_table_first_built_in_inference_mode_still_trains():
    stack = ViTStack(ViTSpec(width=32, depth=1, heads=2))
    with torch.inference_mode():
        stack(torch.randn(1, 4, 32), (2, 2))
    stack(torch.randn(1, 4, 32), (2, 2)).sum().backward()
    assert stack.blocks[0].attn.qkv.weight.grad is not None


def test_rope_is_relative_within_a_grid():
    """Same q at every position, same k at every position: the score depends only on the offset."""
    h = w = 6
    table = AxialRope(head_dim=32, base=100.0)((h, w))
    q = apply_rot_embed_cat(torch.randn(32).expand(h * w, 32), table, half=True).reshape(h, w, 32)
    k = apply_rot_embed_cat(torch.randn(32).expand(h * w, 32), table, half=True).reshape(h, w, 32)
    score = lambda a, b: (q[a] * k[b]).sum()  # noqa: E731
    for a, b, (dy, dx) in [((0, 0), (2, 3), (1, 2)), ((4, 1), (1, 5), (1, 0)), ((3, 3), (3, 3), (-3, 2))]:
        moved = score((a[0] + dy, a[1] + dx), (b[0] + dy, b[1] + dx))
        torch.testing.assert_close(score(a, b), moved, atol=1e-4, rtol=1e-4)
    # ...and it does depend on the offset (a rotation that ignored positions would pass the check above).
    assert not torch.isclose(score((0, 0), (0, 1)), score((0, 0), (3, 4)), atol=1e-3)


def test_prefix_tokens_are_not_rotated(monkeypatch):
    spec = ViTSpec(width=32, depth=1, heads=2)
    stack = ViTStack(spec, num_prefix=2).eval()
    seen = {}

    def capture(q, k, v, **kwargs):
        seen["q"], seen["k"] = q, k
        return torch.zeros_like(q)

    monkeypatch.setattr(F, "scaled_dot_product_attention", capture)
    x = torch.randn(3, 2 + 9, 32)
    stack(x, (3, 3))
    blk = stack.blocks[0]
    q, k, _ = blk.attn.qkv(blk.norm1(x)).reshape(3, 11, 3, 2, 16).permute(2, 0, 3, 1, 4)
    torch.testing.assert_close(seen["q"][:, :, :2], q[:, :, :2])  # CLS + register: untouched
    torch.testing.assert_close(seen["k"][:, :, :2], k[:, :, :2])
    assert not torch.allclose(seen["q"][:, :, 2:], q[:, :, 2:], atol=1e-3)  # patches: rotated


def test_vit_stack_accepts_any_grid_and_rejects_wrong_token_count():
    stack = ViTStack(ViTSpec(width=32, depth=1, heads=2), num_prefix=1)
    assert stack(torch.randn(2, 1 + 12, 32), (3, 4)).shape == (2, 13, 32)
    with pytest.raises(ValueError, match=r"expected 1 \+ 3x3 tokens, got 13"):
        stack(torch.randn(2, 13, 32), (3, 3))


def test_sample_drop_is_identity_at_rate_zero():
    x = torch.randn(8, 5, 4)
    branch = torch.nn.Linear(4, 4)
    assert torch.equal(sample_drop_residual(x, branch, 0.0), x + branch(x))


def test_sample_drop_runs_the_branch_on_round_b_times_keep_samples_scaled_by_b_over_keep():
    x = torch.randn(8, 3)
    seen = []

    def branch(t):
        seen.append(t.shape[0])
        return torch.ones_like(t)

    out = sample_drop_residual(x, branch, 0.3)
    keep = round(8 * 0.7)
    assert seen == [keep]
    delta = (out - x)[:, 0]
    assert int((delta != 0).sum()) == keep
    torch.testing.assert_close(delta[delta != 0], torch.full((keep,), 8 / keep))


def test_sample_drop_keeps_the_expectation():
    torch.manual_seed(0)
    x = torch.randn(4, 6)
    branch = lambda t: torch.sin(3 * t) + 0.5  # noqa: E731 - per-sample, so f(x_i) is known for any subset
    draws = torch.stack([sample_drop_residual(x, branch, 0.5) for _ in range(4000)])
    # each sample gets x + 2 f(x) half of the time and x otherwise: the mean is x + f(x) (std ~ |f|/63)
    torch.testing.assert_close(draws.mean(0), x + branch(x), atol=0.1, rtol=0)


def test_block_options_build_and_bad_options_are_named():
    for ffn in ("swiglu", "geglu", "mlp"):
        spec = ViTSpec(width=32, depth=1, heads=2, ffn=ffn, qk_norm=True, layerscale=1e-4, norm="layernorm")
        assert ViTStack(spec, 1)(torch.randn(2, 5, 32), (2, 2)).shape == (2, 5, 32)
    with pytest.raises(ValueError, match="ffn: expected one of .* got 'relu'"):
        make_ffn(ViTSpec(width=32, depth=1, heads=2, ffn="relu"))
    with pytest.raises(ValueError, match="norm: expected one of .* got 'batchnorm'"):
        make_norm("batchnorm", 8)
    with pytest.raises(ValueError, match="head dim must be a multiple of 4, got 6"):
        ViTStack(ViTSpec(width=12, depth=1, heads=2))


def test_swiglu_hidden_follows_the_dinov3_rule():
    ffn = make_ffn(ViTSpec(width=1024, depth=1, heads=16))
    assert ffn.fc1.out_features == 2 * 2736 and ffn.fc2.in_features == 2736  # int(1024*4*2/3)=2730 -> 2736
