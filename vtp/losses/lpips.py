"""LPIPS v0.1 (Zhang et al. 2018): the `lpips` package's network with weights that load offline (vtp.weights)."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import lpips
import torch
from torch import Tensor, nn

from vtp.weights import LPIPS_NETS, lpips_state_dict


class LPIPS(nn.Module):
    """Perceptual distance between two image batches (B,3,H,W) in [-1, 1]; returns (B,) spatial-mean distances.

    Frozen and always in eval mode (a parent's `.train()` does not change it); gradients flow to the inputs.
    """

    def __init__(self, net: str = "vgg", weights: str | Path | None = None):
        super().__init__()
        if net not in LPIPS_NETS:
            raise ValueError(f"LPIPS net {net!r}: expected one of {', '.join(LPIPS_NETS)}")
        self.net_name = net
        # Built on the meta device: torchvision would spend seconds randomly initialising the backbone (and a
        # classifier LPIPS discards); every parameter is replaced by the loaded weights below.
        with torch.device("meta"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(pretrained|weights).*")  # torchvision's legacy-arg notices
            self.net = lpips.LPIPS(pretrained=False, net=net, pnet_rand=True, use_dropout=False, verbose=False)
        state = _to_lpips_names(lpips_state_dict(net, weights), self.net)
        state |= {f"scaling_layer.{k}": v for k, v in lpips.ScalingLayer().state_dict().items()}
        self.net.load_state_dict(state, strict=True, assign=True)
        self.net.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "LPIPS":
        return super().train(False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape != y.shape:
            raise ValueError(f"LPIPS: expected two (B,3,H,W) batches of the same shape, got {tuple(x.shape)} "
                             f"and {tuple(y.shape)}")
        min_side = _MIN_SIDE[self.net_name]
        if min(x.shape[-2:]) < min_side:
            raise ValueError(f"LPIPS-{self.net_name}: images must be at least {min_side} px on each side, "
                             f"got {tuple(x.shape[-2:])}")
        return self.net(x, y).reshape(x.shape[0])


# The smallest side for which every feature map of the backbone is non-empty.
_MIN_SIDE = {"vgg": 16, "alex": 31}


def _to_lpips_names(state: dict[str, Tensor], model: lpips.LPIPS) -> dict[str, Tensor]:
    """torchvision / vtp names -> the lpips module's names (`net.slice<s>.<i>.*`, `lin<k>.model.0.weight`).

    Tensors are cloned so that no two modules share (and could mutate) the cached weights.
    """
    own = {k: v.clone() for k, v in state.items()}
    out: dict[str, Tensor] = {}
    for name in model.state_dict():  # `lin<k>` and `lins.<k>` are the same modules under two names
        if m := re.fullmatch(r"net\.slice\d+\.(\d+)\.(weight|bias)", name):
            out[name] = own[f"features.{m[1]}.{m[2]}"]
        elif m := re.fullmatch(r"lins?\.?(\d+)\.model\.0\.weight", name):
            out[name] = own[f"lin{m[1]}.weight"]
    return out
