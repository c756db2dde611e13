"""Distribution distances between two image sets, computed by torch-fidelity and named by feature space.

`frechet(a, b, space)` takes uint8 (N, 3, H, W) tensors or image folders, so the same call serves
reconstruction (rFD: reconstructions vs originals) and generation (gFD: DiT samples vs reference images).

Naming is the point of this module: torch-fidelity calls every Frechet distance `frechet_inception_distance`;
here the key says what was measured. Only Inception-v3 with the real FID weights gives `fid_inception`
(comparable to published FID); the offline default gives `fd_effnetlite0`. KID follows the same rule.
Frechet distances are biased upwards at small sample counts: compare values only at equal counts (recorded).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch
from torch.utils.data import Dataset

from vtp.eval import effnet_extractor

Images = Union[torch.Tensor, str, Path]  # uint8 (N, 3, H, W) tensor, or a folder of PNG/JPEG files
FEATURE_SPACES = ("effnetlite0", "inception")
KID_SUBSETS = 100  # KID = mean (and std) of the polynomial-kernel MMD over this many random subsets


@dataclass(frozen=True)
class FeatureSpace:
    name: str  # effnetlite0 | inception (or any name a caller registers an extractor for)
    extractor: str  # torch-fidelity registry name
    weights: Path | None  # None: the extractor needs no weights file
    layer: str  # feature used for FD / KID

    @property
    def fd_key(self) -> str:
        return "fid_inception" if self.name == "inception" else f"fd_{self.name}"

    @property
    def kid_key(self) -> str:
        return f"kid_{self.name}"

    @property
    def is_key(self) -> str:
        return "is_inception" if self.name == "inception" else f"is_{self.name}"


def inception_weights_file() -> str:
    """torch-fidelity's Inception-v3 FID weights file name (the basename of the URL it would download)."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return URL_INCEPTION_V3.rsplit("/", 1)[-1]


def find_inception_weights(explicit: str | Path | None = None) -> Path:
    """The explicit file if given, else torch-fidelity's file in $TORCH_HOME/hub/checkpoints; raises if absent."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"eval.inception_weights = {str(explicit)!r}: file not found")
        return path
    path = Path(torch.hub.get_dir()) / "checkpoints" / inception_weights_file()
    if not path.is_file():
        raise FileNotFoundError(f"Inception FID weights not found at {path} (set eval.inception_weights, or use "
                                f"eval.feature_space: effnetlite0, which works offline)")
    return path


def resolve_feature_space(name: str, inception_weights: str | Path | None = None) -> FeatureSpace:
    """Validate the request before any work: Inception only with its real weights, never a silent substitute."""
    if name == "effnetlite0":
        return FeatureSpace(name, effnet_extractor.register(), effnet_extractor.effnetlite0_weights(), "1280")
    if name == "inception":
        return FeatureSpace(name, "inception-v3-compat", find_inception_weights(inception_weights), "2048")
    raise ValueError(f"feature space {name!r}: allowed: {', '.join(FEATURE_SPACES)}")


class _Uint8Images(Dataset):
    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def _as_input(images: Images, which: str) -> Dataset | str:
    if isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"frechet: {which} must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        return _Uint8Images(images.cpu())
    if not Path(images).is_dir():
        raise FileNotFoundError(f"frechet: {which} = {str(images)!r} is neither a uint8 tensor nor a folder")
    return str(images)


def frechet(images_a: Images, images_b: Images, space: FeatureSpace | str = "effnetlite0",
            kid_subset_size: int | None = None, batch_size: int = 64, device: str | None = None,
            verbose: bool = False) -> dict[str, float]:
    """Frechet distance (and KID when `kid_subset_size` is set) between two image sets in `space`.

    Returns e.g. {"fd_effnetlite0": 3.2, "kid_effnetlite0": 0.01, "kid_effnetlite0_std": 0.002}.
    """
    import torch_fidelity

    if isinstance(space, str):
        space = resolve_feature_space(space)
    if space.name == "inception":
        # torch-fidelity unpickles this file without weights_only; refuse anything that is not a plain state dict.
        torch.load(space.weights, map_location="cpu", weights_only=True)
    cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    out = torch_fidelity.calculate_metrics(
        input1=_as_input(images_a, "images_a"), input2=_as_input(images_b, "images_b"),
        fid=True, kid=kid_subset_size is not None, kid_subset_size=kid_subset_size or 1000, kid_subsets=KID_SUBSETS,
        feature_extractor=space.extractor,
        feature_extractor_weights_path=None if space.weights is None else str(space.weights),
        cuda=cuda, save_cpu_ram=True, batch_size=batch_size, cache=False, verbose=verbose,
        samples_find_deep=False)
    result = {space.fd_key: float(out["frechet_inception_distance"])}
    if kid_subset_size is not None:
        result[space.kid_key] = float(out["kernel_inception_distance_mean"])
        result[space.kid_key + "_std"] = float(out["kernel_inception_distance_std"])
    return result


# -- Feature-level metrics: features extracted once per image set, then every metric from them -------------------
# calculate_metrics() re-reads both inputs per call and wants them whole; generation scores stream a sample file,
# shard the extraction over ranks, reuse the reference features across DiT checkpoints, and add precision/recall
# and an Inception-Score analogue. The metric arithmetic stays torch-fidelity's own functions.
def extractor(space: FeatureSpace, device: str | torch.device = "cpu"):
    """torch-fidelity's extractor for `space`, giving (its FD/KID layer, its classifier logits for IS)."""
    from torch_fidelity.utils import create_feature_extractor

    if space.name == "inception":
        torch.load(space.weights, map_location="cpu", weights_only=True)  # refuse a non-state-dict pickle
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    cls = FEATURE_EXTRACTORS_REGISTRY[space.extractor]
    layers = [space.layer, cls.get_default_feature_layer_for_metric("isc")]
    net = create_feature_extractor(space.extractor, layers, cuda=False, verbose=False,
                                   feature_extractor_weights_path=None if space.weights is None else str(space.weights))
    return net.to(device)


@torch.no_grad()
def extract(batches, space: FeatureSpace, device: str | torch.device = "cpu", net=None) -> dict[str, torch.Tensor]:
    """{"features": (N, D), "logits": (N, K)} float64 on CPU for uint8 (B, 3, H, W) batches."""
    net = net or extractor(space, device)
    feats, logits = [], []
    for images in batches:
        f, lg = net(images.to(device))
        feats.append(f.double().cpu())
        logits.append(lg.double().cpu())
    if not feats:
        raise ValueError("extract: no images")
    return {"features": torch.cat(feats), "logits": torch.cat(logits)}


def distribution_metrics(generated: dict[str, torch.Tensor], reference: dict[str, torch.Tensor],
                         space: FeatureSpace, kid_subset_size: int, prc_neighborhood: int = 3,
                         is_splits: int = 10, seed: int = 2020) -> dict[str, float]:
    """FD, KID (mean, std), precision/recall (Kynkaanniemi et al.'s k-NN manifolds) and the IS analogue of
    `generated` against `reference`, each named by `space`: torch-fidelity's metric functions on features."""
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric
    from torch_fidelity.metric_prc import prc_features_to_metric

    g, r = generated["features"], reference["features"]
    subset = min(kid_subset_size, len(g), len(r))
    fd = fid_statistics_to_metric(fid_features_to_statistics(g), fid_features_to_statistics(r), verbose=False)
    kid = kid_features_to_metric(g, r, kid_subsets=KID_SUBSETS, kid_subset_size=subset, rng_seed=seed,
                                 verbose=False)  # torch-fidelity's default kernel: cubic polynomial
    prc = prc_features_to_metric(g.float(), r.float(), prc_neighborhood=prc_neighborhood, prc_batch_size=10000,
                                 save_cpu_ram=True, verbose=False)
    isc = isc_features_to_metric(generated["logits"], splits=is_splits, shuffle=True, rng_seed=seed)
    name = space.name
    return {space.fd_key: float(fd["frechet_inception_distance"]),
            space.kid_key: float(kid["kernel_inception_distance_mean"]),
            space.kid_key + "_std": float(kid["kernel_inception_distance_std"]),
            f"precision_{name}": float(prc["precision"]), f"recall_{name}": float(prc["recall"]),
            space.is_key: float(isc["inception_score_mean"]), space.is_key + "_std": float(isc["inception_score_std"])}
