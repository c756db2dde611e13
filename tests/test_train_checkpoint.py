"""Checkpoints: atomic, last-K, exact round trip of weights and optimizer state."""
from __future__ import annotations

import json

import torch
from torch import nn

from vtp.train import checkpoint as ckpt


def model_and_opt(seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    opt = torch.optim.AdamW(m.parameters(), lr=0.1)
    m(torch.randn(3, 4)).sum().backward()
    opt.step()
    return m, opt


def test_round_trip_restores_weights_and_optimizer(tmp_path):
    m, opt = model_and_opt(0)
    ckpt.save(tmp_path, 5, {"model": m}, {"model": opt}, {"note": "x"}, keep=2)
    m2, opt2 = model_and_opt(1)
    state = ckpt.load(ckpt.latest(tmp_path), {"model": m2}, {"model": opt2})
    assert state == {"note": "x", "step": 5}
    for a, b in zip(m.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys()
    for k in s1:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(s1[k][name], s2[k][name])


def test_keeps_only_last_k_and_latest_is_highest(tmp_path):
    m, opt = model_and_opt()
    for step in (10, 20, 30, 40):
        ckpt.save(tmp_path, step, {"model": m}, {"model": opt}, {}, keep=2)
    assert [s for s, _ in ckpt.step_dirs(tmp_path)] == [30, 40]
    assert ckpt.latest(tmp_path).name == "step-0000040"


def test_partial_save_is_never_taken_as_latest(tmp_path):
    m, opt = model_and_opt()
    ckpt.save(tmp_path, 10, {"model": m}, {"model": opt}, {}, keep=3)
    partial = tmp_path / ".step-0000020.tmp"  # what a kill during a save leaves behind
    partial.mkdir()
    (partial / "state.json").write_text(json.dumps({"step": 20}))
    assert ckpt.latest(tmp_path).name == "step-0000010"
    ckpt.clean_partial(tmp_path)
    assert not partial.exists()


def test_missing_module_file_names_what_is_there(tmp_path):
    m, opt = model_and_opt()
    ckpt.save(tmp_path, 1, {"model": m}, {}, {}, keep=1)
    try:
        ckpt.load(ckpt.latest(tmp_path), {"teacher": m}, {})
    except FileNotFoundError as e:
        assert "teacher.safetensors" in str(e) and "model.safetensors" in str(e)
    else:
        raise AssertionError("expected FileNotFoundError")


def test_a_step_is_written_once(tmp_path):
    """Re-saving a step (a signal right after a periodic save) keeps the complete checkpoint in place."""
    m, opt = model_and_opt(0)
    first = ckpt.save(tmp_path, 3, {"model": m}, {"model": opt}, {"note": "first"}, keep=2)
    inode = first.stat().st_ino
    again = ckpt.save(tmp_path, 3, {"model": m}, {"model": opt}, {"note": "second"}, keep=2)
    assert again == first and first.stat().st_ino == inode
    assert ckpt.read_state(first)["note"] == "first"
    assert not list(tmp_path.glob(".step-*"))


def test_unreadable_state_is_not_resumed(tmp_path):
    (tmp_path / "step-0000001").mkdir()
    (tmp_path / "step-0000001" / "state.json").write_text("{not json")
    assert ckpt.read_state(tmp_path / "step-0000001") is None
