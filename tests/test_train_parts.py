"""The step's named parts (vtp.train.runtime.part): what `bench_train.py --profile` reads."""
from __future__ import annotations

import time

from vtp.train.pretrain import run_pretrain
from vtp.train.runtime import part, timing_parts

from train_utils import tiny_config, tiny_loader


def test_parts_are_timed_only_inside_timing_parts_and_nest():
    with timing_parts() as times:
        with part("outer"):
            with part("inner"):
                time.sleep(0.01)
    with part("outer"):  # no collector: nothing recorded, nothing raised
        pass
    assert set(times) == {"outer", "outer/inner"} and times["outer"] >= times["outer/inner"] >= 0.01


def test_a_vtp_step_names_every_part(tmp_path):
    cfg = tiny_config(tmp_path, "vtp", "train.grad_accum=2", "train.warmup_steps=0", steps=1)
    start = time.perf_counter()
    with timing_parts() as times:
        run_pretrain(cfg, resume=False, loader=tiny_loader(cfg))
    wall = time.perf_counter() - start
    expected = {"views_masks", "teacher", "ssl_targets", "clip_cache", "forward", "forward/clip_image",
                "forward/clip_text", "forward/clip_loss", "forward/ssl_student", "forward/reconstruction",
                "forward/reconstruction_loss", "backward", "optimizer", "ema"}
    assert expected <= set(times)
    assert sum(t for p, t in times.items() if "/" not in p) < wall
    assert times["forward"] >= sum(t for p, t in times.items() if p.startswith("forward/clip_"))
