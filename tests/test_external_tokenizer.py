"""A diffusers AutoencoderKL under our tokenizer API: equal to diffusers' own encode/decode, found by
`load_tokenizer`, scored by `run_evaluate`, encoded by `run_latents` and decoding DiT samples, as ours are."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_eval_fidelity import TINY_SPACE
from test_eval_run import PARAMS, overrides, shards  # noqa: F401 - shards: the same module-scoped fixture

from vtp.config import load_config
from vtp.data.encode_latents import run_latents
from vtp.data.latents import sha256_file
from vtp.diffusion.generate import run_sample
from vtp.eval import evaluate as evaluate_mod
from vtp.eval.evaluate import run_evaluate
from vtp.models.external import DiffusersVAE, load_tokenizer, weights_file
from vtp.models.tokenizer import Tokenizer
from vtp.train.dit import run_train_dit


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory) -> Path:
    """A random 3-level (downsample 4) AutoencoderKL saved in diffusers' format."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=(8, 8, 16), down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=1, latent_channels=4,
                        norm_num_groups=8, sample_size=32)
    directory = tmp_path_factory.mktemp("sd-vae")
    vae.save_pretrained(directory)
    return directory


def test_adapter_equals_diffusers_own_encode_and_decode(vae_dir):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(vae_dir).eval()
    tok = load_tokenizer(vae_dir).eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        z = tok.encode(x)
        torch.testing.assert_close(z, vae.encode(x).latent_dist.mode(), rtol=0, atol=0)
        torch.testing.assert_close(tok.decode(z), vae.decode(z).sample, rtol=0, atol=0)
    assert z.shape == (2, 4, 8, 8) and tok.spec.latent_shape(32) == (4, 8, 8) and tok.spec.bottleneck_size(32) == 256
    assert tok.spec.text is None and not hasattr(tok, "features")


def test_load_tokenizer_picks_the_format_and_names_both_when_neither(vae_dir, tmp_path):
    assert isinstance(load_tokenizer(vae_dir), DiffusersVAE)
    assert weights_file(vae_dir) == vae_dir / "diffusion_pytorch_model.safetensors"
    Tokenizer.from_spec("tiny").save_pretrained(tmp_path / "ours")
    assert type(load_tokenizer(tmp_path / "ours")) is Tokenizer
    assert weights_file(tmp_path / "ours") == tmp_path / "ours" / "model.safetensors"
    bogus = tmp_path / "bogus"
    bogus.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json: missing.*vtp-tokenizer.*AutoencoderKL"):
        load_tokenizer(bogus)
    (bogus / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(ValueError, match="unknown tokenizer format.*UNet2DModel.*vtp-tokenizer.*AutoencoderKL"):
        load_tokenizer(bogus)
    (bogus / "config.json").write_text((vae_dir / "config.json").read_text())  # weights missing
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.safetensors: missing"):
        load_tokenizer(bogus)


GENERATION = ["latents.batch_size=16", "dit.size=dit-tiny", "dit.steps=2", "dit.warmup_steps=1", "dit.batch_size=8",
              "sample.num=4", "sample.batch_size=4", "sample.steps=2", "sample.grid_per_class=1"]


def test_evaluate_latents_and_samples_on_the_same_protocol(vae_dir, shards, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(evaluate_mod.fidelity, "resolve_feature_space", lambda *a, **k: TINY_SPACE)
    cfg = load_config(overrides=overrides(shards, tmp_path, *GENERATION), params=PARAMS)
    doc = run_evaluate(cfg, tokenizer_dir=vae_dir)
    assert {"psnr", "ssim", "lpips_vgg", "fd_tinyconv", "kid_tinyconv"} == set(doc["summary"])
    assert doc["skipped"] == {"understanding": "not applicable: diffusers-AutoencoderKL-f4c4 has no text tower "
                                               "and no semantic features"}
    saved = json.loads((cfg.run_dir / "eval" / "metrics.json").read_text())
    assert saved["skipped"] == doc["skipped"] and saved["tokenizer"]["dir"] == str(vae_dir)
    assert saved["tokenizer"]["class"] == "vtp.models.external.DiffusersVAE"

    manifest = run_latents(cfg, tokenizer_dir=vae_dir)
    assert manifest["count"] == 48 and manifest["shape"] == [4, 8, 8]
    assert manifest["tokenizer"] == {"dir": str(vae_dir),
                                     "sha256": sha256_file(vae_dir / "diffusion_pytorch_model.safetensors")}

    run_train_dit(cfg, resume=False)  # the DiT's samples are decoded by the tokenizer its latents came from
    samples = run_sample(cfg)
    assert samples["tokenizer"] == manifest["tokenizer"] and samples["count"] == 4
    with np.load(cfg.run_dir / "samples" / "samples.npz") as data:
        assert data["arr_0"].shape == (4, 32, 32, 3)
