"""KL divergence of a diagonal Gaussian posterior from N(0, I), for a variational (ViTok) bottleneck."""
from __future__ import annotations

from torch import Tensor


def kl_divergence(mean: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)), summed over every latent element of a sample, averaged over the batch.

    The per-sample sum (LDM / ViTok convention) makes the weight beta independent of the batch size but not of
    the latent size E: with beta = 1e-3 a larger bottleneck gets a proportionally larger KL term.
    """
    if mean.shape != logvar.shape or mean.ndim < 2:
        raise ValueError(f"kl_divergence: expected mean and logvar of the same (B, ...) shape, got "
                         f"{tuple(mean.shape)} and {tuple(logvar.shape)}")
    mean, logvar = mean.float(), logvar.float()
    per_element = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar)
    return per_element.flatten(1).sum(1).mean()
