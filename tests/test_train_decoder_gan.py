"""Stage 2: the encoder and bottleneck stay frozen, the decoder moves, the GAN terms are live and logged."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from vtp.train.decoder_gan import run_decoder_gan
from vtp.train.pretrain import run_pretrain

from train_utils import tiny_config, tiny_loader


def test_decoder_gan_freezes_encoder_and_trains_decoder(tmp_path):
    gan = ["gan.steps=4", "gan.start_step=1", "gan.adv_warmup_steps=2", "gan.warmup_steps=1", "gan.disc_blocks=2",
           "train.checkpoint_every=2"]
    cfg = tiny_config(tmp_path, "vtp", "loss.clip=false", "loss.ssl=false", *gan, steps=2)
    run_pretrain(cfg, resume=False, loader=tiny_loader(cfg))
    metrics = run_decoder_gan(cfg, resume=False, loader=tiny_loader(cfg))
    before = load_file(cfg.run_dir / "tokenizer" / "model.safetensors")
    after = load_file(cfg.run_dir / "tokenizer-gan" / "model.safetensors")
    frozen = [k for k in before if not k.startswith("decoder.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    assert metrics["step"] == 4 and metrics["adv_weight"] > 0
    assert all(torch.isfinite(torch.tensor(metrics[k])) for k in ("l1", "lpips", "g_adv", "d_loss"))
    run = json.loads((cfg.run_dir / "tokenizer-gan" / "run.json").read_text())
    assert run["status"] == "ok" and run["stage"] == "decoder-gan"


def test_decoder_gan_needs_stage_one(tmp_path):
    cfg = tiny_config(tmp_path, "vtp", steps=2)
    with pytest.raises(FileNotFoundError, match="run `vtp pretrain --config vtp` first"):
        run_decoder_gan(cfg, resume=False, loader=tiny_loader(cfg))


def test_fresh_stage_two_sets_the_previous_run_aside(tmp_path):
    """--fresh (resume=False) moves the old stage-2 checkpoints away, so pruning and resume never mix runs."""
    gan = ["gan.steps=2", "gan.warmup_steps=1", "gan.start_step=0", "gan.disc_blocks=2", "train.checkpoint_every=1"]
    cfg = tiny_config(tmp_path, "vtp", "loss.clip=false", "loss.ssl=false", *gan, steps=2)
    run_pretrain(cfg, resume=False, loader=tiny_loader(cfg))
    run_decoder_gan(cfg, resume=False, loader=tiny_loader(cfg))
    out = cfg.run_dir / "tokenizer-gan"
    assert run_decoder_gan(cfg, resume=False, loader=tiny_loader(cfg))["step"] == 2
    stale = list(out.glob("checkpoints.stale-*"))
    assert len(stale) == 1 and sorted(p.name for p in stale[0].iterdir()) == ["step-0000001", "step-0000002"]
    resumed = run_decoder_gan(cfg, resume=True, loader=tiny_loader(cfg))  # finds its own final step: no re-training
    assert resumed["step"] == 2 and len(list(out.glob("checkpoints.stale-*"))) == 1
