"""2-process gloo DDP equals one process holding the same global batch (to floating-point tolerance).

The global batch, its CLIP/SSL/reconstruction subsets, the multi-crop views and the iBOT masks are the same at
any world size; one rank holds no reconstruction sample at this batch size, so the weight-0 placeholder path
(and Sinkhorn with zero rows on a rank) is exercised too.
"""
from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from vtp.models.tokenizer import Tokenizer
from vtp.train.pretrain import run_pretrain
from train_utils import tiny_config, tiny_loader

pytestmark = pytest.mark.dist
EXTRA = ("train.batch_size=8", "loss.batch_ratio=[8,4,1]")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, runs: str, port: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), VTP_DEVICE="cpu", VTP_NO_PROGRESS="1")
    torch.set_num_threads(1)
    cfg = tiny_config(runs, "vtp", *EXTRA, steps=3)
    run_pretrain(cfg, resume=False, loader=tiny_loader(cfg, rank, world))


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
    single = tiny_config(tmp_path / "single", "vtp", *EXTRA, steps=3)
    run_pretrain(single, resume=False, loader=tiny_loader(single))
    mp.spawn(_rank_main, args=(2, str(tmp_path / "ddp"), free_port()), nprocs=2, join=True)
    assert_matches_single(single, tmp_path / "ddp" / "vtp" / "tokenizer")


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
