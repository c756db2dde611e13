"""2-process gloo DDP equals one process holding the same global batch (to floating-point tolerance).

The global batch, its CLIP/SSL/reconstruction subsets, the multi-crop views and the iBOT masks are the same at
any world size; one rank holds no reconstruction sample at this batch size, so the weight-0 placeholder path
(and Sinkhorn with zero rows on a rank) is exercised too.
"""
from __future__ import annotations

import json
import os
import shutil
import socket

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from vtp.models.tokenizer import Tokenizer
from vtp.train.decoder_gan import run_decoder_gan
from vtp.train.pretrain import run_pretrain

from train_utils import tiny_config, tiny_loader

pytestmark = pytest.mark.dist
EXTRA = ("train.batch_size=8", "loss.batch_ratio=[8,4,1]")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, runs: str, port: int, extra: tuple[str, ...] = (),
               stage: str = "pretrain") -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), VTP_DEVICE="cpu", VTP_NO_PROGRESS="1")
    torch.set_num_threads(1)
    cfg = tiny_config(runs, "vtp", *EXTRA, *extra, steps=3)
    run = run_decoder_gan if stage == "decoder-gan" else run_pretrain
    run(cfg, resume=False, loader=tiny_loader(cfg, rank, world))


def assert_matches_single(single, out) -> None:
    """Weights differ by < 0.1% of how far training moved them; the last step's losses agree."""
    a = load_file(single.run_dir / "tokenizer" / "model.safetensors")
    b = load_file(out / "model.safetensors")
    assert a.keys() == b.keys()
    torch.manual_seed(single.seed)
    start = Tokenizer.from_spec(single.model.spec()).state_dict()
    keys = [k for k in a if k in start]
    diff = torch.cat([(a[k] - b[k]).flatten() for k in keys]).norm()
    update = torch.cat([(a[k] - start[k]).flatten() for k in keys]).norm()
    assert update > 0 and diff / update < 1e-3, f"|parallel - single| / |update| = {diff / update:.2e}"
    loss_a = json.loads((single.run_dir / "tokenizer" / "metrics.json").read_text())
    loss_b = json.loads((out / "metrics.json").read_text())
    for term in ("loss", "clip", "dino", "ibot", "l1", "lpips"):  # the last step's global-batch losses
        assert abs(loss_a[term] - loss_b[term]) < 1e-4 * max(1.0, abs(loss_a[term])), term


def test_two_process_ddp_matches_single_process(tmp_path):
    peak = ("train.peak_tflops=1",)
    single = tiny_config(tmp_path / "single", "vtp", *EXTRA, *peak, steps=3)
    run_pretrain(single, resume=False, loader=tiny_loader(single))
    mp.spawn(_rank_main, args=(2, str(tmp_path / "ddp"), free_port(), peak), nprocs=2, join=True)
    assert_matches_single(single, tmp_path / "ddp" / "vtp" / "tokenizer")
    # MFU is per device: each rank's FLOPs over its own step time over one device's peak.
    one = json.loads((single.run_dir / "tokenizer" / "metrics.json").read_text())
    two = json.loads((tmp_path / "ddp" / "vtp" / "tokenizer" / "metrics.json").read_text())
    for m in (one, two):
        assert m["peak_flops_device"] == 1e12 and m["mfu"] == pytest.approx(m["flops_per_s_device"] / 1e12)
    assert one["flops_per_step_device"] == one["flops_per_step"]
    # The global batch is the same, so the global FLOPs are too, plus the weight-0 placeholder: here one rank
    # holds no reconstruction sample and runs one (decoder + LPIPS) anyway. Each device does a share (rank 0's
    # is recorded).
    assert one["flops_per_step"] < two["flops_per_step"] < 1.25 * one["flops_per_step"]
    assert 0.3 * two["flops_per_step"] < two["flops_per_step_device"] < 0.7 * two["flops_per_step"]
    assert two["total_flops"] == pytest.approx(two["flops_per_step"] * 3)


def test_two_processes_with_accumulation_match_single_process(tmp_path):
    """2 ranks x 2 micro-batches of 2: CLIP scores the step's cached embeddings of both ranks, Sinkhorn spans
    both micro-batches of both ranks, and the logit scale gets its gradient once, in the micro-step DDP syncs."""
    single = tiny_config(tmp_path / "single", "vtp", *EXTRA, steps=3)
    run_pretrain(single, resume=False, loader=tiny_loader(single))
    mp.spawn(_rank_main, args=(2, str(tmp_path / "ddp"), free_port(), ("train.grad_accum=2",)), nprocs=2, join=True)
    assert_matches_single(single, tmp_path / "ddp" / "vtp" / "tokenizer")


GAN = ("loss.clip=false", "loss.ssl=false", "gan.steps=3", "gan.warmup_steps=1", "gan.start_step=0",
       "gan.adv_warmup_steps=1", "gan.disc_blocks=2")


def test_two_process_decoder_gan_matches_single_process(tmp_path):
    """Stage 2 under DDP (decoder and discriminator both wrapped) trains the same decoder as one process."""
    stage1 = tiny_config(tmp_path / "stage1", "vtp", *EXTRA, *GAN, steps=2)
    run_pretrain(stage1, resume=False, loader=tiny_loader(stage1))
    for name in ("single", "ddp"):
        shutil.copytree(stage1.run_dir / "tokenizer", tmp_path / name / "vtp" / "tokenizer")
    single = tiny_config(tmp_path / "single", "vtp", *EXTRA, *GAN, steps=2)
    one = run_decoder_gan(single, resume=False, loader=tiny_loader(single))
    mp.spawn(_rank_main, args=(2, str(tmp_path / "ddp"), free_port(), GAN, "decoder-gan"), nprocs=2, join=True)
    a = load_file(tmp_path / "single" / "vtp" / "tokenizer-gan" / "model.safetensors")
    b = load_file(tmp_path / "ddp" / "vtp" / "tokenizer-gan" / "model.safetensors")
    start = load_file(stage1.run_dir / "tokenizer" / "model.safetensors")
    keys = [k for k in a if k.startswith("decoder.")]
    diff = torch.cat([(a[k] - b[k]).flatten() for k in keys]).norm()
    update = torch.cat([(a[k] - start[k]).flatten() for k in keys]).norm()
    assert update > 0 and diff / update < 1e-3, f"|parallel - single| / |update| = {diff / update:.2e}"
    two = json.loads((tmp_path / "ddp" / "vtp" / "tokenizer-gan" / "metrics.json").read_text())
    for term in ("loss", "l1", "lpips", "g_adv", "d_loss"):
        assert abs(one[term] - two[term]) < 1e-4 * max(1.0, abs(one[term])), term


def _fsdp_rank_main(rank: int, world: int, runs: str, port: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), VTP_DEVICE="cpu", VTP_NO_PROGRESS="1")
    torch.set_num_threads(1)
    cfg = tiny_config(runs, "vtp", *EXTRA, "train.fsdp=true", "train.image_every=2", steps=3)
    run_pretrain(cfg, resume=False, loader=tiny_loader(cfg, rank, world))


def test_two_process_fsdp2_matches_single_process(tmp_path):
    """FSDP2 (fully_shard on every block and the root, teacher sharded alike) trains the same model."""
    single = tiny_config(tmp_path / "single", "vtp", *EXTRA, steps=3)
    run_pretrain(single, resume=False, loader=tiny_loader(single))
    mp.spawn(_fsdp_rank_main, args=(2, str(tmp_path / "fsdp"), free_port()), nprocs=2, join=True)
    out = tmp_path / "fsdp" / "vtp" / "tokenizer"
    assert_matches_single(single, out)
    assert (out / "samples" / "reconstruction-0000002.png").exists()
    assert (out / "checkpoints" / "step-0000003" / "teacher.safetensors").exists()
