"""Generation end to end on tiny data: latents (with statistics) -> DiT on the shared engine -> judge -> samples;
resume and DDP for the DiT; the latent statistics applied and un-applied exactly."""
from __future__ import annotations

import io
import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from vtp.config import load_config
from vtp.data.encode_latents import run_latents
from vtp.data.ingest import ingest
from vtp.data.latents import LatentStats, latent_loader, read_manifest
from vtp.diffusion.generate import run_sample
from vtp.eval.judge import run_judge
from vtp.train.data import memory_batches
from vtp.train.dit import run_train_dit
from vtp.train.pretrain import run_pretrain

from train_utils import REPO, TINY

SETS = [*TINY, "train.steps=2", "data.synthetic_train=96", "data.synthetic_val=32", "data.shard_size=32",
        "data.shuffle_buffer=16", "loss.clip=false", "loss.ssl=false", "dit.size=dit-tiny", "dit.steps=4",
        "dit.warmup_steps=1",
        "dit.batch_size=8", "dit.ema=0.9", "train.checkpoint_every=2", "latents.batch_size=16",
        "latents.shard_size=40", "judge.epochs=1", "judge.train_samples=96", "judge.val_samples=32",
        "judge.width=8", "sample.num=12", "sample.batch_size=5", "sample.steps=4", "sample.grid_per_class=2"]


def config(root: Path, *extra: str):
    return load_config("vtp", [*SETS, f"data.root={root / 'shards'}", f"runs_root={root / 'runs'}", *extra],
                       REPO / "params.yaml")


@pytest.fixture(scope="module")
def latents_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gen")
    cfg = config(root)
    ingest(source="synthetic", path=None, out=Path(cfg.data.root), name=cfg.data.dataset,
           resolution=cfg.data.resolution, workers=1, strict=True, cfg=cfg)
    run_pretrain(cfg, resume=False)
    run_latents(cfg)
    return root


def test_latents_hold_every_training_image_with_exact_statistics(latents_root):
    cfg = config(latents_root)
    out = cfg.run_dir / "latents"
    manifest, stats = read_manifest(out), LatentStats.load(out)
    assert manifest["count"] == 96 and manifest["shape"] == [8, 4, 4] and manifest["skipped_count"] == 0
    import webdataset as wds

    raw = list(wds.WebDataset(sorted(str(p) for p in out.glob("latents-*.tar")), shardshuffle=False))
    assert len(raw) == 96 and {"latent.npy", "flip.npy", "json", "txt"} <= raw[0].keys()
    z = torch.from_numpy(np.stack([np.load(io.BytesIO(s["latent.npy"])) for s in raw]))
    torch.testing.assert_close(torch.tensor(stats.mean), z.double().mean(dim=(0, 2, 3)).float())
    torch.testing.assert_close(torch.tensor(stats.std), z.double().std(dim=(0, 2, 3), unbiased=False).float())
    # the flipped latent is the tokenizer's encoding of the flipped image, not a flipped latent
    assert not torch.equal(torch.from_numpy(np.load(io.BytesIO(raw[0]["flip.npy"]))), z[0].flip(-1))
    back = stats.denormalize(stats.normalize(z))
    torch.testing.assert_close(back, z, rtol=0, atol=1e-6)
    normed = stats.normalize(z).double()
    torch.testing.assert_close(normed.mean(dim=(0, 2, 3)), torch.zeros(8, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(normed.std(dim=(0, 2, 3), unbiased=False), torch.ones(8, dtype=torch.float64),
                               atol=1e-5, rtol=0)


def test_latent_stream_is_endless_seeded_and_labelled(latents_root):
    out = config(latents_root).run_dir / "latents"
    make = latent_loader(out, 8, rank=0, label="shape", shuffle_buffer=16)
    a = [next(it) for it in [make(3)] for _ in range(15)]  # 120 > 96 samples: resampled shards go on
    b = [next(it) for it in [make(3)] for _ in range(15)]
    assert all(x["key"] == y["key"] and torch.equal(x["latent"], y["latent"]) for x, y in zip(a, b))
    assert a[0]["latent"].shape == (8, 8, 4, 4) and a[0]["label"].dtype == torch.long
    other = next(latent_loader(out, 8, rank=1, label="shape", shuffle_buffer=16)(3))
    assert other["key"] != a[0]["key"]  # each rank draws its own shards


def test_dit_trains_samples_and_is_judged(latents_root):
    cfg = config(latents_root)
    metrics = run_train_dit(cfg, resume=False)
    assert metrics["step"] == 4 and np.isfinite(metrics["loss"]) and {"mse", "cos"} <= metrics.keys()
    dit_dir = cfg.run_dir / "dit"
    assert {"model.safetensors", "raw.safetensors", "config.json", "stats.json"} <= {p.name for p in dit_dir.iterdir()}
    assert json.loads((dit_dir / "stats.json").read_text()) == json.loads(
        (cfg.run_dir / "latents" / "stats.json").read_text())
    ema, raw = load_file(dit_dir / "model.safetensors"), load_file(dit_dir / "raw.safetensors")
    assert ema.keys() == raw.keys() and any(not torch.equal(ema[k], raw[k]) for k in ema)
    judge = run_judge(cfg)
    assert 0 <= judge["val_accuracy"] <= 1 and judge["chance"] == pytest.approx(0.1)
    doc = run_sample(cfg)
    out = cfg.run_dir / "samples"
    with np.load(out / "samples.npz") as data:
        first = data["arr_0"]
        assert first.shape == (12, 32, 32, 3) and first.dtype == np.uint8
        assert data["arr_1"].tolist() == [i % 10 for i in range(12)]
    assert doc["sampler"]["solver"] == "euler" and doc["sampler"]["steps"] == 4 and doc["nfe_per_batch"] == 4
    assert 0 <= doc["judge_accuracy"] <= 1 and doc["judge_chance"] == pytest.approx(0.1)
    assert (out / "grids" / "grid.png").is_file() and len(list((out / "grids").glob("class-*.png"))) == 10
    assert not list(out.glob(".part-*"))
    # samples depend on the seed and index only: another batch size gives the same images
    run_sample(config(latents_root, "sample.batch_size=12"))
    with np.load(out / "samples.npz") as data:
        assert np.array_equal(data["arr_0"], first)


def test_dit_resume_is_bitwise_equal(latents_root, tmp_path):
    base = config(latents_root)
    straight = config(latents_root, f"runs_root={tmp_path / 'a'}")
    resumed = config(latents_root, f"runs_root={tmp_path / 'b'}")
    for c in (straight, resumed):
        shutil.copytree(base.run_dir / "latents", c.run_dir / "latents")
    run_train_dit(straight, resume=False)
    run_train_dit(resumed, resume=False)
    ckpts = resumed.run_dir / "dit" / "checkpoints"
    shutil.rmtree(ckpts / "step-0000004")  # as if killed after step 2
    assert run_train_dit(resumed, resume=True)["step"] == 4
    a = load_file(straight.run_dir / "dit" / "model.safetensors")
    b = load_file(resumed.run_dir / "dit" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def _memory(cfg, rank: int = 0, world: int = 1):
    g = torch.Generator().manual_seed(0)
    columns = {"latent": torch.randn(64, 8, 4, 4, generator=g) * 0.1, "label": torch.arange(64) % 10}
    return memory_batches(columns, cfg.dit.batch_size // world, rank, world)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, root: str, runs: str, port: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), VTP_DEVICE="cpu", VTP_NO_PROGRESS="1")
    torch.set_num_threads(1)
    cfg = config(Path(root), f"runs_root={runs}")
    run_train_dit(cfg, resume=False, loader=_memory(cfg, rank, world))


@pytest.mark.dist
def test_two_process_dit_matches_single_process(latents_root, tmp_path):
    base = config(latents_root)
    single = config(latents_root, f"runs_root={tmp_path / 'single'}")
    for name in ("single", "ddp"):
        shutil.copytree(base.run_dir / "latents", tmp_path / name / "vtp" / "latents")
    one = run_train_dit(single, resume=False, loader=_memory(single))
    mp.spawn(_rank_main, args=(2, str(latents_root), str(tmp_path / "ddp"), _port()), nprocs=2, join=True)
    a = load_file(tmp_path / "single" / "vtp" / "dit" / "raw.safetensors")
    b = load_file(tmp_path / "ddp" / "vtp" / "dit" / "raw.safetensors")
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff < 1e-5, diff
    two = json.loads((tmp_path / "ddp" / "vtp" / "dit" / "metrics.json").read_text())
    assert abs(one["loss"] - two["loss"]) < 1e-5 * max(1.0, one["loss"])


def test_generation_metrics_and_convergence_curve(latents_root, tmp_path):
    """Samples scored against val in a named feature space, with counts and the sampler recorded; the FD curve
    over the DiT's kept EMA snapshots, each from the same number of freshly seeded samples."""
    from vtp.eval.generation import run_evaluate_generation
    from vtp.train.dit import snapshot_steps

    cfg = config(latents_root, f"runs_root={tmp_path}", "dit.snapshot_every=2", "gen_eval.num_reference=16",
                 "gen_eval.kid_subset_size=8", "gen_eval.convergence_num=6", "gen_eval.is_splits=2")
    shutil.copytree(config(latents_root).run_dir / "latents", cfg.run_dir / "latents")
    run_train_dit(cfg, resume=False)
    assert snapshot_steps(cfg.run_dir / "dit") == [2, 4]
    run_sample(cfg)
    doc = run_evaluate_generation(cfg)
    m = doc["metrics"]
    assert {"fd_effnetlite0", "kid_effnetlite0", "precision_effnetlite0", "recall_effnetlite0",
            "is_effnetlite0"} <= m.keys() and not any(k.startswith("fid") for k in m)
    fd = m["fd_effnetlite0"]
    assert fd["n"] == 12 and fd["n_reference"] == 16 and fd["sampler"]["steps"] == 4 and fd["value"] > 0
    assert m["kid_effnetlite0"]["subset_size"] == 8 and 0 <= m["precision_effnetlite0"]["value"] <= 1
    assert m["is_effnetlite0"]["real_images_is"] >= 1
    assert [p["step"] for p in doc["convergence"]] == [2, 4] and all(p["n"] == 6 for p in doc["convergence"])
    out = cfg.run_dir / "generation"
    assert json.loads((out / "summary.json").read_text())["fd_effnetlite0"] == fd["value"]
    curve = json.loads((out / "convergence.json").read_text())
    assert curve["points"] == [{"step": p["step"], "fd_effnetlite0": p["fd_effnetlite0"]} for p in doc["convergence"]]


def test_snapshots_follow_their_own_cadence_and_end_at_the_last_step(latents_root, tmp_path):
    from vtp.train.dit import snapshot_steps

    cfg = config(latents_root, f"runs_root={tmp_path}", "dit.snapshot_every=3")
    shutil.copytree(config(latents_root).run_dir / "latents", cfg.run_dir / "latents")
    run_train_dit(cfg, resume=False)
    assert snapshot_steps(cfg.run_dir / "dit") == [3, 4]
