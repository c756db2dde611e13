"""Stage 2 (decoder GAN fine-tune): a patch discriminator, hinge losses and the generator weight schedule.

VTP does not publish its stage-2 discriminator (METHOD.md §1.5). ViTok uses a StyleGAN discriminator with hinge
losses. This is a StyleGAN-style residual discriminator without blur pooling or minibatch-stddev, with spectral
norm on every conv (Miyato et al. 2018) for a stable hinge game, and a patch output so any image size works.
Written here because none of our dependencies ships a discriminator.
"""
from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm


def _conv(c_in: int, c_out: int, kernel: int, bias: bool = True) -> nn.Module:
    return spectral_norm(nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=bias))


class _DownBlock(nn.Module):
    """Pre-activation residual block that halves the resolution; the sum is scaled by 1/sqrt(2) (StyleGAN2)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1, self.conv2 = _conv(c_in, c_in, 3), _conv(c_in, c_out, 3)
        self.skip = _conv(c_in, c_out, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.leaky_relu(x, 0.2))
        h = F.avg_pool2d(self.conv2(F.leaky_relu(h, 0.2)), 2)
        return (h + self.skip(F.avg_pool2d(x, 2))) / math.sqrt(2)


class Discriminator(nn.Module):
    """Images (B,3,H,W) in [-1, 1], H and W >= 2**(blocks+1) -> patch logits (B, 1, H/2**blocks, W/2**blocks).

    Channels double per block from `width`, capped at 8 * width.
    """

    def __init__(self, width: int = 64, blocks: int = 3):
        super().__init__()
        if width < 1 or blocks < 1:
            raise ValueError(f"Discriminator: width and blocks must be >= 1, got {width} and {blocks}")
        self.blocks = blocks
        channels = [min(width * 2**i, 8 * width) for i in range(blocks + 1)]
        self.stem = _conv(3, width, 3)
        self.body = nn.Sequential(*(_DownBlock(a, b) for a, b in zip(channels, channels[1:])))
        self.head = _conv(channels[-1], 1, 3)

    @property
    def min_size(self) -> int:
        return 2 ** (self.blocks + 1)  # leaves at least a 2x2 map of patch logits

    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != 3 or min(images.shape[-2:]) < self.min_size:
            raise ValueError(f"Discriminator: expected images (B,3,H,W) with H, W >= {self.min_size}, got "
                             f"{tuple(images.shape)}")
        return self.head(F.leaky_relu(self.body(self.stem(images)), 0.2))


def hinge_d_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """mean(relu(1 - D(real))) + mean(relu(1 + D(fake))) (Lim & Ye 2017; no 1/2 factor)."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_g_loss(fake_logits: Tensor) -> Tensor:
    """-mean(D(fake)): the generator's side of the hinge game."""
    return -fake_logits.mean()


def adversarial_weight(step: int, start: int, warmup: int, weight: float) -> float:
    """Generator GAN weight: 0 before `start`, then linear from 0 to `weight` over `warmup` steps, then `weight`."""
    if start < 0 or warmup < 0 or weight < 0:
        raise ValueError(f"adversarial_weight: start, warmup and weight must be >= 0, got {start}, {warmup}, "
                         f"{weight}")
    if step < start:
        return 0.0
    if warmup == 0:
        return weight
    return weight * min(1.0, (step - start) / warmup)
