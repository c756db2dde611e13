"""`evaluate_tokenizer` end to end on a fake tokenizer whose embeddings we control, and on fake data."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from vtp.config import Config
from vtp.eval.evaluate import evaluate_tokenizer
from vtp.eval.features import probe_features
from vtp.eval.fidelity import FeatureSpace
from vtp.eval.report import SCHEMA, read_report
from vtp.models.registry import get_spec, with_overrides
from vtp.models.tokenizer import Tokenizer

from fidelity_fakes import FakeExtractor

NAMES = ["red", "orange", "yellow", "green", "teal", "blue", "violet", "magenta"]
HUES = torch.arange(len(NAMES)) * 2 * math.pi / len(NAMES)
PALETTE = torch.stack([HUES.cos(), HUES.sin(), -(HUES.cos() + HUES.sin())], 1) * 0.5  # zero-mean colours in [-1, 1]
RGB_STATS = "vtp-test-rgb-stats"


class RgbStats(FakeExtractor):
    """Per-channel mean and std: a cheap feature space that still sees blur (the std drops)."""

    DIM = "6"

    def forward(self, x):
        x = x.double() / 255
        return (torch.cat([x.mean((2, 3)), x.std((2, 3))], 1),)


if RGB_STATS not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(RGB_STATS, RgbStats)
SPACE = FeatureSpace("rgbstats", RGB_STATS, None, "6")


class ColourData:
    """Images of one colour (the class) with texture; `shuffle_labels` detaches labels from images."""

    def __init__(self, res: int, shuffle_labels: bool = False, split_size: int = 10_000):
        self.res, self.shuffle, self.split_size = res, shuffle_labels, split_size

    def batches(self, split: str, num_samples: int, batch_size: int):
        g = torch.Generator().manual_seed({"train": 0, "val": 1}[split])
        num_samples = min(num_samples, self.split_size)
        for start in range(0, num_samples, batch_size):
            b = min(batch_size, num_samples - start)
            y = torch.randint(0, len(NAMES), (b,), generator=g)
            texture = 0.3 * torch.randn(b, 1, self.res // 2, self.res // 2, generator=g)
            images = (PALETTE[y][:, :, None, None] + F.interpolate(texture, scale_factor=2)).clamp(-1, 1)
            labels = y[torch.randperm(b, generator=g)] if self.shuffle else y
            yield {"image": images, "labels": {"colour": labels}, "caption": [NAMES[i] for i in labels],
                   "key": [f"{split}-{start + i}" for i in range(b)]}

    def classnames(self, label: str) -> list[str]:
        assert label == "colour"
        return list(NAMES)


class FakeTokenizer(torch.nn.Module):
    """4x average-pool encoder, nearest-neighbour decoder (so detail is lost), colour-direction CLIP towers."""

    def __init__(self, text: bool = True):
        super().__init__()
        self.spec = SimpleNamespace(name="fake-pool4", text=object() if text else None)
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # a parameter, so .to(device) has something to move

    def encode(self, images):
        return F.avg_pool2d(images, 4)

    def decode(self, latents):
        return F.interpolate(latents, scale_factor=4, mode="nearest")

    def features(self, images):
        tokens = self.encode(images).flatten(2).transpose(1, 2)
        return {"cls": tokens.mean(1), "patches": tokens, "bottleneck": tokens}

    def image_features(self, images):
        return F.normalize(images.mean((2, 3)), dim=-1)

    def encode_text(self, texts):
        rows = [PALETTE[[i for i, n in enumerate(NAMES) if f" {n}" in f" {t}"][0]] for t in texts]
        return F.normalize(torch.stack(rows), dim=-1)


def config(tmp_path, **eval_overrides) -> Config:
    ev = {"num_samples": 80, "batch_size": 40, "kid_subset_size": 40, "label": "colour", "probe_train_samples": 160,
          "probe_epochs": 10, "probe_batch_size": 32, "grid_images": 6, **eval_overrides}
    return Config.model_validate({"runs_root": str(tmp_path), "eval": ev, "data": {"resolution": 32},
                                  "aug": {"global_crop_size": 32, "local_crop_size": 16}})


def l1_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Stands in for LPIPS where a test is about something else (LPIPS itself: test_eval_image_metrics.py)."""
    return (a - b).abs().mean((1, 2, 3))


def test_full_evaluation_writes_honest_metrics(tmp_path):
    cfg = config(tmp_path)
    doc = evaluate_tokenizer(FakeTokenizer(), cfg, tmp_path / "eval", ColourData(32), space=SPACE)  # real LPIPS
    saved = read_report(tmp_path / "eval" / "metrics.json")
    assert saved["schema"] == SCHEMA == doc["schema"] == "vtp.eval/1"
    assert json.loads((tmp_path / "eval" / "summary.json").read_text()) == saved["summary"]
    expected = {"psnr", "ssim", "lpips_vgg", "fd_rgbstats", "kid_rgbstats", "zeroshot_top1", "zeroshot_top5",
                "probe_bottleneck_top1", "probe_bottleneck_top5", "probe_full_last4_top1", "probe_full_last4_top5"}
    assert set(saved["summary"]) == expected and not any("fid" in k for k in saved["summary"])
    for name, m in saved["metrics"].items():
        assert {"value", "n", "feature_space", "resolution", "protocol"} <= set(m), name
        assert m["resolution"] == 32 and m["value"] == saved["summary"][name]
    assert saved["metrics"]["psnr"]["n"] == 80 and saved["metrics"]["fd_rgbstats"]["feature_space"] == "rgbstats"
    assert saved["metrics"]["zeroshot_top1"]["chance"] == 1 / 8
    assert saved["metrics"]["probe_full_last4_top1"]["n_train"] == 160
    # The colour is kept by the pool-4 encoder: understanding is perfect; the lost texture costs reconstruction.
    s = saved["summary"]
    assert s["zeroshot_top1"] == 1.0 and s["probe_bottleneck_top1"] > 0.95 and s["probe_full_last4_top1"] > 0.95
    assert 10 < s["psnr"] < 40 and 0 < s["ssim"] < 1 and s["lpips_vgg"] > 0 and s["fd_rgbstats"] > 0
    assert (tmp_path / "eval" / saved["grids"]["reconstruction"]).is_file() and saved["skipped"] == {}
    assert saved["timing"]["val_pass"]["images"] == 80


def test_shuffled_captions_drop_understanding_to_chance(tmp_path):
    cfg = config(tmp_path, num_samples=800, batch_size=200, probe_train_samples=400, probe_epochs=3,
                 probe_batch_size=100)
    s = evaluate_tokenizer(FakeTokenizer(), cfg, tmp_path / "eval", ColourData(32, shuffle_labels=True),
                           lpips=l1_distance, space=SPACE)["summary"]
    for key in ("zeroshot_top1", "probe_bottleneck_top1", "probe_full_last4_top1"):
        assert abs(s[key] - 1 / 8) < 0.06, (key, s[key])


def test_no_text_tower_skips_zeroshot_with_a_reason(tmp_path):
    cfg = config(tmp_path, num_samples=200, kid_subset_size=100, probe_train_samples=80, probe_epochs=2)
    doc = evaluate_tokenizer(FakeTokenizer(text=False), cfg, tmp_path / "eval", ColourData(32, split_size=60),
                             lpips=l1_distance, space=SPACE)
    assert "zeroshot" in doc["skipped"] and "text tower" in doc["skipped"]["zeroshot"]
    assert "kid" in doc["skipped"] and "kid_subset_size" in doc["skipped"]["kid"]
    assert not any(k.startswith(("zeroshot", "kid")) for k in doc["summary"])
    assert "probe_bottleneck_top1" in doc["summary"]


def small(name: str, depth: int):
    return with_overrides(get_spec(name), encoder={"width": 32, "depth": depth, "heads": 2},
                          decoder={"width": 32, "depth": 1, "heads": 2}, patch=8)


def test_headline_probe_features_are_cls_of_the_last_4_blocks_and_mean_patches():
    torch.manual_seed(0)
    tok = Tokenizer.from_spec(small("tiny", 6)).eval()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    feats, layout = probe_features(tok, x)
    assert feats["full_last4"].shape == (3, 5 * 32) and feats["bottleneck"].shape == (3, tok.spec.bottleneck_dim)
    layers = tok.intermediate_layers(x, n=4)
    expected = torch.cat([*(lay["cls"] for lay in layers), tok.features(x)["patches"].mean(1)], dim=1)
    torch.testing.assert_close(feats["full_last4"], expected)
    assert layout["full_last4"].startswith("concat(CLS of the last 4 blocks) + mean of the last block's patch")
    shallow, _ = probe_features(Tokenizer.from_spec(small("tiny", 2)), x)  # fewer blocks than 4: all of them
    assert shallow["full_last4"].shape == (3, 3 * 32)
    vitok = Tokenizer.from_spec(small("vitok-s", 4), clip_feature="pooled")
    feats, layout = probe_features(vitok, x)  # no CLS token: mean-pooled patches only
    assert feats["full_last4"].shape == (3, 32) and "no CLS token" in layout["full_last4"]
    fake, layout = probe_features(FakeTokenizer(), x)  # no intermediate_layers(): features() CLS + mean
    assert fake["full_last4"].shape == (3, 6) and "last block only" in layout["full_last4"]
