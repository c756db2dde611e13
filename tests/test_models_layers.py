"""ViT building blocks: RoPE (DINOv3 2D axial, ViTok integer positions), sample-level stochastic depth,
block options."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from timm.layers.pos_embed_sincos import apply_rot_embed_cat

from vtp.config import load_config
from vtp.config.base import ConfigError
from vtp.models.layers import AxialRope, Rope, ViTStack, _SiluGate, make_ffn, make_norm, sample_drop_residual
from vtp.models.registry import SIZES, ViTSpec, with_overrides


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


def test_swiglu_matches_timms_packed_swiglu_in_values_and_gradients():
    """Reference: timm's `SwiGLUPacked` with the same weights; its gate backward goes through autograd's chunk."""
    from timm.layers import SwiGLUPacked
    torch.manual_seed(0)
    ours = make_ffn(ViTSpec(width=48, depth=1, heads=4))
    ref = SwiGLUPacked(48, ours.fc1.out_features)
    ref.load_state_dict(ours.state_dict())  # same parameter names
    x = torch.randn(3, 7, 48, dtype=torch.float64, requires_grad=True)
    ours, ref = ours.double(), ref.double()
    out_ours, out_ref = ours(x), ref(x)
    torch.testing.assert_close(out_ours, out_ref, rtol=0, atol=0)
    grad = torch.randn_like(out_ref)
    g_ours = torch.autograd.grad(out_ours, [x, *ours.parameters()], grad)
    g_ref = torch.autograd.grad(out_ref, [x, *ref.parameters()], grad)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(_SiluGate.apply, (torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True),))


# ---- ViTok's integer-position RoPE (METHOD.md 4.1; registry.ROPE_STYLES) ------------------------------------
def vitok_angles(style: str, h: int, w: int, head_dim: int, theta: float, num_prefix: int = 0) -> list[list[float]]:
    """The formula with Python floats: 1D, token p (prefix first, then row-major patches) turns channel pair
    (2i, 2i+1) by p * theta^(-2i/d); 2D, patch (row y, column x) turns pair j < d/4 by x * theta^(-4j/d) and
    pair d/4 + j by y * theta^(-4j/d)."""
    if style == "vitok-1d":
        return [[p * theta ** (-2 * i / head_dim) for i in range(head_dim // 2)] for p in range(num_prefix + h * w)]
    rows = []
    for p in range(h * w):
        y, x = divmod(p, w)
        freqs = [theta ** (-4 * j / head_dim) for j in range(head_dim // 4)]
        rows.append([x * f for f in freqs] + [y * f for f in freqs])
    return rows


def rotate_pairs(x: torch.Tensor, angles: list[list[float]]) -> torch.Tensor:
    """ViTok's `apply_rotary_emb` as complex numbers: (x[2i] + i x[2i+1]) * exp(i angle_i)."""
    z = torch.view_as_complex(x.double().reshape(*x.shape[:-1], -1, 2).contiguous())
    a = torch.tensor(angles, dtype=torch.float64)
    return torch.view_as_real(z * torch.polar(torch.ones_like(a), a)).flatten(-2).float()


@pytest.mark.parametrize("style, grid, num_prefix", [("vitok-1d", (3, 4), 0), ("vitok-1d", (2, 3), 2),
                                                      ("vitok-2d", (3, 4), 0), ("vitok-2d", (4, 2), 0)])
def test_vitok_rope_angles_follow_the_formula(style, grid, num_prefix):
    rope = Rope(head_dim=16, base=1e4, style=style, num_prefix=num_prefix)
    table = rope(grid)
    n = grid[0] * grid[1] + (num_prefix if style == "vitok-1d" else 0)
    assert table.shape == (n, 32) and table.dtype == torch.float32 and not rope.rotate_half
    ref = torch.tensor(vitok_angles(style, *grid, 16, 1e4, num_prefix), dtype=torch.float64)
    torch.testing.assert_close(rope.angles(grid), ref, atol=1e-12, rtol=0)
    ref = ref.repeat_interleave(2, dim=-1)  # both channels of a pair share the angle
    torch.testing.assert_close(table, torch.cat([ref.sin(), ref.cos()], dim=-1).float(), atol=1e-6, rtol=0)
    # the table, applied as the attention applies it, is ViTok's pairwise rotation
    x = torch.randn(2, n, 16)
    torch.testing.assert_close(apply_rot_embed_cat(x, table, half=False), rotate_pairs(x, vitok_angles(
        style, *grid, 16, 1e4, num_prefix)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("style", ["dinov3-2d", "vitok-1d", "vitok-2d"])
def test_rope_rotations_preserve_norms(style):
    rope = Rope(head_dim=32, base=1e4 if style != "dinov3-2d" else 100.0, style=style)
    table = rope((5, 6))
    x = torch.randn(3, table.shape[0], 32)
    y = apply_rot_embed_cat(x, table, half=rope.rotate_half)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-5)


def test_vitok_1d_rope_is_relative_along_the_sequence():
    """Same q and same k at every position: after the rotation q_a . k_b depends on b - a only."""
    n = 4 * 5
    table = Rope(head_dim=32, base=1e4, style="vitok-1d")((4, 5))
    q = apply_rot_embed_cat(torch.randn(32).expand(n, 32), table, half=False)
    k = apply_rot_embed_cat(torch.randn(32).expand(n, 32), table, half=False)
    score = lambda a, b: (q[a] * k[b]).sum()  # noqa: E731
    for a, b, shift in [(0, 3, 7), (5, 2, 11), (9, 9, -9), (0, 19, 0)]:
        torch.testing.assert_close(score(a, b), score(a + shift, b + shift), atol=1e-4, rtol=1e-4)
    assert not torch.isclose(score(0, 1), score(0, 6), atol=1e-3)


def capture_qk(monkeypatch, spec: ViTSpec, num_prefix: int, grid: tuple[int, int]):
    """Run a 1-block stack; return (rotated q, rotated k, raw q, raw k), each (B, heads, tokens, head_dim)."""
    stack = ViTStack(spec, num_prefix=num_prefix).eval()
    seen = {}

    def capture(q, k, v, **kwargs):
        seen["q"], seen["k"] = q, k
        return torch.zeros_like(q)

    monkeypatch.setattr(F, "scaled_dot_product_attention", capture)
    n = num_prefix + grid[0] * grid[1]
    x = torch.randn(2, n, spec.width)
    stack(x, grid)
    blk = stack.blocks[0]
    q, k, _ = blk.attn.qkv(blk.norm1(x)).reshape(2, n, 3, spec.heads, spec.head_dim).permute(2, 0, 3, 1, 4)
    return seen["q"], seen["k"], q, k


def test_vitok_1d_rotates_prefix_tokens_as_the_first_positions(monkeypatch):
    spec = ViTSpec(width=32, depth=1, heads=2, rope="vitok-1d", rope_base=1e4)
    q_rot, k_rot, q, k = capture_qk(monkeypatch, spec, num_prefix=2, grid=(2, 3))
    angles = vitok_angles("vitok-1d", 2, 3, 16, 1e4, num_prefix=2)  # prefix at 0, 1; patches at 2..7
    torch.testing.assert_close(q_rot, rotate_pairs(q, angles), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(k_rot, rotate_pairs(k, angles), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(q_rot[:, :, 0], q[:, :, 0])  # position 0 is the identity rotation
    assert not torch.allclose(q_rot[:, :, 1], q[:, :, 1], atol=1e-3)  # the second prefix token turns


def test_vitok_2d_leaves_prefix_tokens_alone(monkeypatch):
    spec = ViTSpec(width=32, depth=1, heads=2, rope="vitok-2d", rope_base=1e4)
    q_rot, k_rot, q, k = capture_qk(monkeypatch, spec, num_prefix=1, grid=(3, 2))
    torch.testing.assert_close(q_rot[:, :, :1], q[:, :, :1])
    torch.testing.assert_close(k_rot[:, :, 1:], rotate_pairs(k[:, :, 1:], vitok_angles("vitok-2d", 3, 2, 16, 1e4)),
                               atol=1e-5, rtol=1e-5)


def test_the_default_style_is_dinov3_in_the_stack_too():
    stack = ViTStack(ViTSpec(width=64, depth=1, heads=2), num_prefix=1)
    assert stack.rope.style == "dinov3-2d" and stack.rope.rotate_half and stack.blocks[0].attn.num_prefix_tokens == 1
    torch.testing.assert_close(stack.rope((3, 5)), reference_rope(3, 5, 32, 100.0), atol=1e-5, rtol=0)
    assert AxialRope is Rope


def test_registry_rope_styles():
    vitok = [n for n in SIZES if n.startswith("vitok-")]
    assert len(vitok) == 3 + 27
    for name in vitok:
        for tower in (SIZES[name].encoder, SIZES[name].decoder):
            assert (tower.rope, tower.rope_base) == ("vitok-1d", 10000.0), name
    for name in (n for n in SIZES if not n.startswith("vitok-")):  # vtp-*, tiny, vtp-cpu-s
        for tower in (SIZES[name].encoder, SIZES[name].decoder):
            assert (tower.rope, tower.rope_base) == ("dinov3-2d", 100.0), name
    spec = with_overrides(SIZES["vitok-s"], decoder={"rope": "vitok-2d"})
    assert spec.encoder.rope == "vitok-1d" and spec.decoder.rope == "vitok-2d"


def test_bad_rope_settings_are_named():
    with pytest.raises(ValueError, match="rope: expected one of dinov3-2d, vitok-1d, vitok-2d, got 'vitok-3d'"):
        ViTSpec(width=32, depth=1, heads=2, rope="vitok-3d")
    with pytest.raises(ValueError, match="rope_base: expected a positive number, got 0"):
        ViTSpec(width=32, depth=1, heads=2, rope_base=0)
    with pytest.raises(ValueError, match="rope: expected one of .*got 'axial'"):
        Rope(16, 1e4, style="axial")
    with pytest.raises(ValueError, match="1D RoPE: head dim must be a multiple of 2, got 7"):
        Rope(7, 1e4, style="vitok-1d")
    Rope(6, 1e4, style="vitok-1d")  # 1D needs only an even head dim


@pytest.mark.parametrize("override, field, hint", [
    ("model.encoder.rope=vitok-3d", "model.encoder.rope", "allowed: dinov3-2d, vitok-1d, vitok-2d"),
    ("model.decoder.rope_base=-1", "model.decoder.rope_base", "must be a positive number"),
])
def test_config_names_bad_rope_overrides(params_file, override, field, hint):
    with pytest.raises(ConfigError) as err:
        load_config("vtp", [override], params_file)
    msg = str(err.value)
    assert "\n" not in msg and f"{field} = " in msg and hint in msg, msg


def test_config_rope_overrides_reach_the_spec(params_file):
    cfg = load_config("vtp", ["model.encoder.rope=vitok-2d", "model.encoder.rope_base=1e4"], params_file)
    assert (cfg.model.spec().encoder.rope, cfg.model.spec().encoder.rope_base) == ("vitok-2d", 10000.0)
    assert cfg.model.spec().decoder.rope == "dinov3-2d"


@pytest.mark.parametrize("num_prefix", [0, 2])
@pytest.mark.parametrize("rotate_half", [True, False])
@pytest.mark.parametrize("qk_norm", [False, True])
def test_rope_attention_matches_timms_attention_rope(num_prefix, rotate_half, qk_norm):
    """The fused rotation (prefix rows at angle 0, one buffer) gives timm's AttentionRope outputs and gradients."""
    from timm.layers import AttentionRope

    from vtp.models.attention import RopeAttention

    torch.manual_seed(0)
    kw = dict(qkv_bias=True, num_prefix_tokens=num_prefix, rotate_half=rotate_half, qk_norm=qk_norm,
              norm_layer=torch.nn.LayerNorm)
    ref = AttentionRope(64, 4, **kw)
    ref.fused_attn = True
    ours = RopeAttention(64, 4, **kw)
    ours.load_state_dict(ref.state_dict())
    angles = torch.rand(12, 8) * 6  # a pair shares its angle: halves (rotate-half) or neighbours (interleaved)
    angles = torch.cat([angles, angles], -1) if rotate_half else angles.repeat_interleave(2, -1)
    table = torch.cat([angles.sin(), angles.cos()], -1)
    x = torch.randn(3, num_prefix + 12, 64)
    outs = []
    for m in (ref, ours):
        xi = x.clone().requires_grad_()
        y = m(xi, rope=table)
        outs.append((y, *torch.autograd.grad(y.square().sum(), [xi, *m.parameters()])))
    for a, b in zip(*outs):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="table has 12 rows for 11 tokens"):
        ours(x[:, :-1], rope=table)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_matches_timms_fp32_rms_norm_in_values_and_gradients(affine, dtype):
    """Both of our paths, the hand-written one (CPU) and torch's op in fp32 (CUDA; on CPU its composite), against
    timm's RmsNormFp32."""
    from timm.layers import RmsNormFp32

    from vtp.models.norm import RmsNorm, fused_rms_norm

    torch.manual_seed(0)
    ref, ours = RmsNormFp32(48, eps=1e-5, affine=affine), RmsNorm(48, eps=1e-5, affine=affine)
    if affine:
        with torch.no_grad():
            ref.weight.normal_()
            ours.weight.copy_(ref.weight)
    x, g = torch.randn(3, 5, 48).to(dtype) * 3, torch.randn(3, 5, 48).to(dtype)
    outs = []
    for m, f in ((ref, ref), (ours, ours), (ours, lambda t: fused_rms_norm(t, ours.weight, ours.eps))):
        xi = x.clone().requires_grad_()
        y = f(xi)
        assert y.dtype == dtype
        outs.append((y, *torch.autograd.grad(y, [xi, *m.parameters()], g)))
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            torch.testing.assert_close(b, a, **tol)
