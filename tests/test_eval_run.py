"""`run_evaluate` on real (tiny) tokenizers and real shards: files, run record, skipped groups, the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vtp.config import load_config
from vtp.data.ingest import ingest
from vtp.eval import evaluate as evaluate_mod
from vtp.eval.evaluate import run_evaluate
from vtp.eval.fidelity import FeatureSpace
from vtp.models.registry import get_spec, with_overrides
from vtp.models.tokenizer import Tokenizer

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
REPO = PARAMS.parent


def overrides(root: Path, runs: Path, *more: str) -> list[str]:
    return [f"data.root={root}", f"runs_root={runs}", "data.resolution=32", "aug.global_crop_size=32",
            "aug.local_crop_size=16", "data.synthetic_train=48", "data.synthetic_val=24", "data.shard_size=24",
            "model.size=tiny", "eval.num_samples=24", "eval.batch_size=12", "eval.kid_subset_size=12",
            "eval.probe_train_samples=48", "eval.probe_epochs=2", "eval.grid_images=4", *more]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    cfg = load_config(overrides=overrides(root, root), params=PARAMS)
    ingest("synthetic", None, root, cfg.data.dataset, 32, 1, False, cfg)
    return root


@pytest.fixture
def cheap_space(monkeypatch):
    """FD/KID in a cheap registered space (the effnetlite0 path has its own tests and the slow test below)."""
    from test_eval_fidelity import TINY_SPACE

    monkeypatch.setattr(evaluate_mod.fidelity, "resolve_feature_space", lambda *a, **k: TINY_SPACE)
    return TINY_SPACE


def save_tokenizer(cfg, spec) -> Path:
    torch.manual_seed(0)
    tok = Tokenizer.from_spec(spec, clip_feature="cls" if spec.cls_token else "pooled")
    tok.save_pretrained(cfg.run_dir / "tokenizer")
    return cfg.run_dir / "tokenizer"


def test_run_evaluate_writes_metrics_grids_and_run_record(shards, tmp_path, cheap_space: FeatureSpace):
    cfg = load_config(overrides=overrides(shards, tmp_path), params=PARAMS)
    save_tokenizer(cfg, cfg.model.spec())
    doc = run_evaluate(cfg)
    out = cfg.run_dir / "eval"
    assert (out / "metrics.json").is_file() and (out / "summary.json").is_file()
    assert (out / "grids" / "reconstruction.png").is_file()
    run = json.loads((out / "run.json").read_text())
    assert run["stage"] == "evaluate" and run["status"] == "ok" and run["metrics"] == doc["summary"]
    assert doc["tokenizer"]["size"] == "tiny" and doc["tokenizer"]["parameters"] > 0
    assert {"psnr", "ssim", "lpips_vgg", "fd_tinyconv", "kid_tinyconv", "zeroshot_top1", "probe_bottleneck_top1",
            "probe_full_last4_top1"} <= set(doc["summary"])
    assert doc["metrics"]["psnr"]["n"] == 24 and doc["metrics"]["probe_full_last4_top1"]["n_train"] == 48
    width, depth = cfg.model.spec().encoder.width, cfg.model.spec().encoder.depth
    full = doc["metrics"]["probe_full_last4_top1"]
    assert full["feature_space"] == f"full_last4 features (dim {(min(depth, 4) + 1) * width})"
    assert f"concat(CLS of the last {min(depth, 4)} blocks)" in full["protocol"]
    # An untrained tokenizer reconstructs badly and knows nothing: its numbers say so.
    assert doc["summary"]["psnr"] < 20 and doc["summary"]["zeroshot_top1"] < 0.5


def test_external_layout_without_text_tower_or_cls(shards, tmp_path, cheap_space):
    """A ViTok-style tokenizer (no text tower, no CLS) in a directory of the user's choice."""
    cfg = load_config(overrides=overrides(shards, tmp_path), params=PARAMS)
    spec = with_overrides(get_spec("vitok-s"), encoder={"width": 32, "depth": 1, "heads": 2},
                          decoder={"width": 32, "depth": 1, "heads": 2}, patch=8)
    elsewhere = tmp_path / "external"
    Tokenizer.from_spec(spec, clip_feature="pooled").save_pretrained(elsewhere)
    doc = run_evaluate(cfg, tokenizer_dir=elsewhere)
    assert doc["skipped"] == {"zeroshot": "the tokenizer has no text tower"}
    full = doc["metrics"]["probe_full_last4_top1"]
    assert full["feature_space"] == "full_last4 features (dim 32)" and "no CLS token" in full["protocol"]
    assert doc["tokenizer"]["dir"] == str(elsewhere)


def test_missing_tokenizer_fails_and_records_it(shards, tmp_path, cheap_space):
    cfg = load_config(overrides=overrides(shards, tmp_path), params=PARAMS)
    with pytest.raises(FileNotFoundError, match="config.json"):
        run_evaluate(cfg)
    assert json.loads((cfg.run_dir / "eval" / "run.json").read_text())["status"] == "failed"


@pytest.mark.slow  # effnetlite0 features at 224 px and torch-fidelity's 1280-d eigendecomposition: ~30-60 s here
def test_cli_evaluate_with_the_offline_feature_space(shards, tmp_path):
    cfg = load_config(overrides=overrides(shards, tmp_path), params=PARAMS)
    save_tokenizer(cfg, cfg.model.spec())
    sets = [a for o in overrides(shards, tmp_path) for a in ("--set", o)]
    proc = subprocess.run([sys.executable, "-m", "vtp.cli", "evaluate", "--params", str(PARAMS), *sets],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((cfg.run_dir / "eval" / "summary.json").read_text())
    assert "fd_effnetlite0" in summary and "kid_effnetlite0" in summary and "fid_inception" not in summary
    assert summary["fd_effnetlite0"] > 0


def test_inception_without_weights_is_a_config_error_before_any_work(shards, tmp_path, monkeypatch):
    from vtp.config import ConfigError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    cfg = load_config(overrides=overrides(shards, tmp_path, "eval.feature_space=inception"), params=PARAMS)
    with pytest.raises(ConfigError, match="eval.feature_space = 'inception'.*effnetlite0"):
        run_evaluate(cfg)
    assert not (cfg.run_dir / "eval").exists()
