"""The tokenizer: shapes, input errors, save/load round trip, EMA teacher, and a one-batch overfit."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from vtp.models.encoder import VisionEncoder
from vtp.models.registry import get_spec, with_overrides
from vtp.models.teacher import EMATeacher
from vtp.models.tokenizer import Tokenizer

TINY = get_spec("tiny")  # width 64, depth 2, patch 8, d 8, text width 64 (ctx 32), DINO 128 prototypes


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: one thread avoids OpenMP spinning on a busy two-core machine (10x faster)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    torch.manual_seed(0)
    return Tokenizer.from_spec("tiny").eval()


def images(b: int = 2, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g) * 2 - 1


def test_shapes(tok):
    x = images(2, 32, 48)
    trunk = tok.trunk(x)
    assert trunk["cls"].shape == (2, 64) and trunk["patches"].shape == (2, 4 * 6, 64)
    recon, kl = tok.reconstruct(x)
    assert recon.shape == x.shape and kl is None
    assert tok.encode(x).shape == (2, 8, 4, 6)
    assert tok.decode(tok.encode(x)).shape == x.shape
    feats = tok.features(x)
    assert feats["patches"].shape == (2, 24, 64) and feats["bottleneck"].shape == (2, 24, 8)
    for emb in (tok.clip_image(x), tok.image_features(x), tok.encode_text(["a red square", "a blue circle"])):
        assert emb.shape == (2, 64)
        torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    assert tok.dino_head(trunk["patches"]).shape == (2, 24, 128)
    assert tok.logit_scale.item() == pytest.approx(torch.log(torch.tensor(1 / 0.07)).item())


def test_semantic_reads_the_bottleneck_only_when_asked(tok):
    x = images()
    torch.testing.assert_close(tok.semantic(x)["cls"], tok.trunk(x)["cls"])
    narrow = Tokenizer.from_spec(TINY, bottleneck_ae_only=False, clip_feature="pooled")
    sem = narrow.semantic(x)
    assert sem["cls"].shape == (2, 8) and sem["patches"].shape == (2, 16, 8)
    torch.testing.assert_close(sem["patches"], narrow.bottleneck.mode(narrow.trunk(x)["patches"]))
    assert narrow.clip_image(x).shape == (2, 64) and narrow.dino_head(sem["cls"]).shape == (2, 128)


def test_masks_replace_patches_by_the_mask_token(tok):
    x = images()
    masks = torch.zeros(2, 16, dtype=torch.bool)
    torch.testing.assert_close(tok.trunk(x, masks=masks)["patches"], tok.trunk(x)["patches"])
    masks[0, :8] = True
    masked = tok.trunk(x, masks=masks)["patches"]
    torch.testing.assert_close(masked[1], tok.trunk(x)["patches"][1])
    assert not torch.allclose(masked[0], tok.trunk(x)["patches"][0])
    # every parameter takes part in the unmasked forward (DDP): the mask token gets a (zero) gradient
    student = Tokenizer.from_spec(TINY)
    student.trunk(x)["cls"].sum().backward()
    assert student.encoder.mask_token.grad is not None and not student.encoder.mask_token.grad.any()


def test_mask_token_takes_part_without_prefix_tokens():
    """With no CLS and no registers the zero touch goes to the patches: same tokens, a zero gradient."""
    torch.manual_seed(0)
    enc = VisionEncoder(TINY.encoder, TINY.patch, cls_token=False)
    assert enc.num_prefix == 0
    x = images()
    patches = enc(x)["patches"]
    torch.testing.assert_close(patches, enc.blocks(enc.patch_embed(x), (4, 4)))
    patches.sum().backward()
    assert enc.mask_token.grad is not None and not enc.mask_token.grad.any()


def test_local_crops_and_stochastic_depth_in_training_mode():
    student = Tokenizer.from_spec(TINY).train()
    out = student.semantic(images(8, 16, 16), drop_rate=0.5)
    assert out["cls"].shape == (8, 64) and out["patches"].shape == (8, 4, 64)
    out["cls"].sum().backward()
    assert student.encoder.blocks.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_registers_are_prefix_tokens_left_out_of_the_outputs():
    reg = Tokenizer.from_spec(replace(TINY, encoder=replace(TINY.encoder, registers=3)))
    assert reg.encoder.num_prefix == 4
    out = reg.trunk(images())
    assert out["cls"].shape == (2, 64) and out["patches"].shape == (2, 16, 64)
    assert reg.encode(images()).shape == (2, 8, 4, 4)


def test_gaussian_bottleneck_samples_in_training_and_returns_the_mean_in_eval():
    vae = Tokenizer.from_spec(replace(TINY, variational=True, text=None, dino=None))
    x = images()
    vae.train()
    (r1, kl), (r2, _) = vae.reconstruct(x), vae.reconstruct(x)
    assert kl.ndim == 0 and kl > 0 and not torch.equal(r1, r2)
    vae.eval()
    torch.testing.assert_close(vae.reconstruct(x)[0], vae.decode(vae.encode(x)))
    assert vae.encode(x).shape == (2, 8, 4, 4)


def test_gaussian_kl_is_the_closed_form_summed_per_sample_and_averaged_over_the_batch():
    vae = Tokenizer.from_spec(replace(TINY, variational=True, text=None, dino=None))
    h = torch.randn(2, 16, 64)
    mean, logvar = vae.bottleneck.proj(h).chunk(2, dim=-1)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mean, (0.5 * logvar).exp()),
                                            torch.distributions.Normal(0.0, 1.0)).sum(dim=(1, 2)).mean()
    torch.testing.assert_close(vae.bottleneck(h)[1], ref)


def test_vitok_sizes_have_no_cls_token_or_semantic_heads():
    vitok = Tokenizer.from_spec(replace(get_spec("vitok-s-b/16"), encoder=TINY.encoder, decoder=TINY.decoder,
                                        patch=8))
    assert vitok.text is None and vitok.dino_head is None and vitok.clip_proj is None
    out = vitok.trunk(images())
    assert out["cls"] is None and out["patches"].shape == (2, 16, 64)
    with pytest.raises(ValueError, match="has no a text tower"):
        vitok.encode_text(["x"])


def test_a_vitok_size_with_its_1d_rope_trains_at_32px():
    spec = with_overrides(get_spec("vitok-s-b/16"), encoder={"width": 32, "depth": 1, "heads": 2},
                          decoder={"width": 32, "depth": 2, "heads": 2}, patch=8)
    assert spec.encoder.rope == spec.decoder.rope == "vitok-1d" and spec.encoder.rope_base == 1e4
    torch.manual_seed(0)
    vitok = Tokenizer.from_spec(spec).train()
    assert vitok.encoder.blocks.rope.style == vitok.decoder.blocks.rope.style == "vitok-1d"
    x = images()
    recon, kl = vitok.reconstruct(x)
    assert recon.shape == x.shape and kl is not None and torch.isfinite(recon).all()
    (F.mse_loss(recon, x) + 1e-3 * kl).backward()
    for stack in (vitok.encoder.blocks, vitok.decoder.blocks):
        grad = stack.blocks[0].attn.qkv.weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


DEEP = replace(TINY, encoder=replace(TINY.encoder, depth=5))


def test_intermediate_layers_are_the_final_normed_outputs_of_the_last_blocks():
    deep = Tokenizer.from_spec(DEEP).train()  # train mode: intermediate_layers never drops paths anyway
    x = images(3)
    layers = deep.intermediate_layers(x, n=4)
    assert len(layers) == 4 and all(lay["cls"].shape == (3, 64) and lay["patches"].shape == (3, 16, 64)
                                    for lay in layers)
    assert not any(t.requires_grad for lay in layers for t in lay.values())  # grad-free, though grad is on
    seen = []  # each block's raw output during an ordinary forward
    hooks = [blk.register_forward_hook(lambda m, a, out: seen.append(out)) for blk in deep.encoder.blocks.blocks]
    with torch.no_grad():
        final = deep.trunk(x)
    for h in hooks:
        h.remove()
    for lay, raw in zip(layers, seen[-4:], strict=True):
        normed = deep.encoder.blocks.norm(raw)
        assert torch.equal(lay["cls"], normed[:, 0]) and torch.equal(lay["patches"], normed[:, 1:])
    (last,) = deep.intermediate_layers(x, n=1)
    assert torch.equal(last["cls"], final["cls"]) and torch.equal(last["patches"], final["patches"])
    assert torch.equal(layers[-1]["patches"], last["patches"])
    with pytest.raises(ValueError, match="expected 1 <= n <= depth 5, got 6"):
        deep.intermediate_layers(x, n=6)


def test_intermediate_layers_without_cls_or_with_registers():
    vitok = Tokenizer.from_spec(replace(get_spec("vitok-s-b/16"), encoder=TINY.encoder, decoder=TINY.decoder,
                                        patch=8))
    layers = vitok.intermediate_layers(images(), n=2)
    assert [lay["cls"] for lay in layers] == [None, None] and layers[0]["patches"].shape == (2, 16, 64)
    reg = Tokenizer.from_spec(replace(TINY, encoder=replace(TINY.encoder, registers=3)))
    (last,) = reg.intermediate_layers(images(), n=1)
    assert torch.equal(last["patches"], reg.trunk(images())["patches"]) and last["patches"].shape == (2, 16, 64)


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(2, 4, 32, 32), r"expected a float tensor \(B, 3, H, W\).*\(2, 4, 32, 32\)"),
    (torch.zeros(2, 3, 30, 32), "multiples of the patch size 8, got 30x32"),
    (torch.zeros(3, 32, 32), r"got torch.float32 \(3, 32, 32\)"),
    (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), "got torch.uint8"),
])
def test_bad_images_name_expected_and_received(tok, bad, match):
    with pytest.raises(ValueError, match=match):
        tok.encode(bad)


def test_other_bad_inputs_name_expected_and_received(tok):
    with pytest.raises(ValueError, match=r"latents: expected a float tensor \(B, 8, h, w\), got .*\(2, 4, 4, 4\)"):
        tok.decode(torch.zeros(2, 4, 4, 4))
    with pytest.raises(ValueError, match=r"masks: expected a bool tensor of shape \(2, 16\)"):
        tok.trunk(images(), masks=torch.zeros(2, 15, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"text tokens: expected an integer tensor \(B, 32\).*\(2, 77\)"):
        tok.encode_text(torch.zeros(2, 77, dtype=torch.long))
    with pytest.raises(KeyError, match="unknown model size 'vtp-xxl'; registered sizes: .*tiny"):
        Tokenizer.from_spec("vtp-xxl")
    with pytest.raises(ValueError, match="clip_feature: expected 'cls' or 'pooled', got 'mean'"):
        Tokenizer.from_spec(TINY, clip_feature="mean")


def test_save_and_from_pretrained_round_trip_bit_identical(tmp_path):
    torch.manual_seed(1)
    src = Tokenizer.from_spec(TINY, bottleneck_ae_only=False, clip_feature="pooled").eval()
    src.save_pretrained(tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["config.json", "model.safetensors"]
    dst = Tokenizer.from_pretrained(tmp_path / "tok").eval()
    assert dst.spec == src.spec and not dst.bottleneck_ae_only and dst.clip_feature == "pooled"
    x = images()
    for fn in (lambda t: t.encode(x), lambda t: t.reconstruct(x)[0], lambda t: t.clip_image(x),
               lambda t: t.encode_text(["a green triangle", "two dots"]),
               lambda t: t.dino_head(t.semantic(x)["patches"])):
        assert torch.equal(fn(src), fn(dst))
    with pytest.raises(FileNotFoundError, match="config.json: missing"):
        Tokenizer.from_pretrained(tmp_path / "nowhere")


def test_ema_teacher_is_a_frozen_copy_and_updates_in_place():
    torch.manual_seed(2)
    student = Tokenizer.from_spec(TINY, bottleneck_ae_only=False)
    teacher = EMATeacher(student)
    assert teacher.bottleneck is not None and not any(p.requires_grad for p in teacher.parameters())
    x = images()
    out = teacher(x)
    assert out["cls_logits"].shape == (2, 128) and out["patch_logits"].shape == (2, 16, 128)
    sem = student.semantic(x)
    torch.testing.assert_close(out["cls_logits"], student.dino_head(sem["cls"]))
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, 3] = mask[1, 7] = True
    torch.testing.assert_close(teacher(x, patch_mask=mask)["patch_logits"], out["patch_logits"][mask])

    before = {n: p.clone() for n, p in teacher.named_parameters()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    teacher.update(student, 0.9)
    s = dict(student.named_parameters())
    for n, p in teacher.named_parameters():
        torch.testing.assert_close(p, 0.9 * before[n] + 0.1 * s[n])
    assert Tokenizer.from_spec(TINY).text is not None and EMATeacher(Tokenizer.from_spec(TINY)).bottleneck is None
    with pytest.raises(ValueError, match=r"momentum: expected a value in \[0, 1\], got 1.5"):
        teacher.update(student, 1.5)
    wrapped = torch.nn.ModuleDict({"module": student})  # what a DDP wrapper's names look like
    with pytest.raises(KeyError, match="no counterpart in the ModuleDict"):
        teacher.update(wrapped, 0.9)


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(3)
    a = Tokenizer.from_spec(replace(TINY, text=None, dino=None)).train()
    b = Tokenizer.from_spec(replace(TINY, text=None, dino=None)).train()
    b.load_state_dict(a.state_dict())
    b.set_grad_checkpointing(True)
    x = images(4)
    for m in (a, b):
        torch.manual_seed(4)  # same drop subsets in both
        m.reconstruct(x, drop_rate=0.5)[0].abs().mean().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=n)


def test_tiny_tokenizer_overfits_one_batch():
    torch.manual_seed(0)
    model = Tokenizer.from_spec(replace(TINY, text=None, dino=None)).train()
    g = torch.Generator().manual_seed(0)
    x = F.interpolate(torch.rand(4, 3, 4, 4, generator=g) * 2 - 1, size=32, mode="bilinear", align_corners=False)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(150):
        loss = (model.reconstruct(x)[0] - x).abs().mean()  # pure L1
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def test_encoder_matches_timm_vision_transformer_parameter_count():
    from timm.layers import RmsNorm, SwiGLUPacked
    from timm.models.vision_transformer import VisionTransformer

    ours = Tokenizer.from_spec(TINY).encoder
    # same trunk in timm: CLS, no absolute position embedding, SwiGLU hidden 176 (= ceil8(64*4*2/3)), RMSNorm
    ref = VisionTransformer(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2 * 176 / 64,
                            mlp_layer=SwiGLUPacked, norm_layer=RmsNorm, pos_embed="none", num_classes=0)
    n_ours = sum(p.numel() for p in ours.parameters())
    assert n_ours == sum(p.numel() for p in ref.parameters()) + 64  # + our iBOT mask token
