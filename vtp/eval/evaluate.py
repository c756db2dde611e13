"""`vtp evaluate`: reconstruction and understanding metrics of a trained tokenizer.

Reconstruction (val split, training resolution): PSNR, SSIM, LPIPS-VGG, Frechet distance and KID between
reconstructions and originals in a named feature space (`fd_effnetlite0` offline, `fid_inception` only with the
real Inception weights). Understanding: zero-shot top-1/top-5 (tokenizers with a text tower) and two linear
probes (METHOD.md 2.3): `probe_bottleneck_*` on mean-pooled bottleneck latents (the scaling-study protocol) and
`probe_full_last4_*` on full-width concat(CLS of the last 4 blocks) + mean patch tokens (the headline protocol;
mean patch tokens only without a CLS token). Probes are fitted on train-split features, the learning rate chosen
on a held-out part of them, and reported on val.

Writes `<run>/eval/`: metrics.json + summary.json (vtp.eval.report), grids/reconstruction.png, run.json.
`evaluate_tokenizer` works on any object with the public tokenizer API, so external tokenizers can be scored;
`run_evaluate` opens a vtp tokenizer or a diffusers AutoencoderKL directory (vtp.models.external), and a tokenizer
with neither a text tower nor features() has understanding recorded as not applicable.
Single process, fp32. Both uint8 image sets stay in memory for torch-fidelity (2 x N x 3 x R^2 bytes: 400 MB for
1024 images at 256 px); for 50k-image sets give `fidelity.frechet` folders instead.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Iterable, Protocol

import torch

from vtp.config import Config, ConfigError, EvalConfig, to_dict
from vtp.eval import fidelity, probe, zeroshot
from vtp.eval.features import PROBE_KINDS, has_probe_features, has_text_tower, probe_features
from vtp.eval.grids import ERROR_GAIN, save_grid
from vtp.eval.reconstruction import ReconstructionScores
from vtp.eval.report import record, write_report
from vtp.log import progress
from vtp.runinfo import RunRecord

log = logging.getLogger(__name__)


class EvalData(Protocol):
    """Where evaluation images come from: batches {"image": (B,3,R,R) in [-1,1], "labels": {name: (B,)}, ...}."""

    def batches(self, split: str, num_samples: int, batch_size: int) -> Iterable[dict]: ...

    def classnames(self, label: str) -> list[str]: ...


class ShardData:
    """The configured dataset's shards (vtp.data), iterated deterministically."""

    def __init__(self, cfg: Config):
        self.cfg = cfg

    def batches(self, split: str, num_samples: int, batch_size: int) -> Iterable[dict]:
        from vtp.data.loader import eval_loader

        return eval_loader(self.cfg, split, batch_size=batch_size, num_samples=num_samples)

    def classnames(self, label: str) -> list[str]:
        from vtp.data.loader import read_manifest

        sets = read_manifest(self.cfg).get("label_sets") or {}
        if label not in sets:
            raise ValueError(f"eval.label = {label!r}: dataset {self.cfg.data.dataset!r} has label sets "
                             f"{', '.join(sets) or 'none'}")
        return list(sets[label])


def run_evaluate(cfg: Config, tokenizer_dir: Path | None = None) -> dict:
    """Evaluate the tokenizer in `tokenizer_dir` (default `<run>/tokenizer`); returns the metrics.json document."""
    from vtp.models.external import load_tokenizer

    tokenizer_dir = Path(tokenizer_dir or cfg.run_dir / "tokenizer")
    out_dir = cfg.run_dir / "eval"
    try:  # a feature space that cannot be built is a configuration problem: report it before any work
        fidelity.resolve_feature_space(cfg.eval.feature_space, cfg.eval.inception_weights)
    except FileNotFoundError as err:
        raise ConfigError(f"config {cfg.name!r}: eval.feature_space = {cfg.eval.feature_space!r}: {err}") from None
    run = RunRecord(out_dir, "evaluate", to_dict(cfg), seed=cfg.seed, tokenizer_dir=str(tokenizer_dir))
    try:
        tok = load_tokenizer(tokenizer_dir)
        doc = evaluate_tokenizer(tok, cfg, out_dir, ShardData(cfg), tokenizer_info={"dir": str(tokenizer_dir)})
    except BaseException:
        run.finish("failed")
        raise
    run.finish("ok", metrics=doc["summary"])
    return doc


def _describe(tok: Any, extra: dict | None) -> dict:
    spec = getattr(tok, "spec", None)
    info = {"class": f"{type(tok).__module__}.{type(tok).__qualname__}", "size": getattr(spec, "name", None)}
    if isinstance(tok, torch.nn.Module):
        info["parameters"] = sum(p.numel() for p in tok.parameters())
    return {**info, **(extra or {})}


def _labels(batch: dict, label: str) -> torch.Tensor:
    labels = batch.get("labels") or {}
    if label not in labels:
        raise ValueError(f"eval.label = {label!r}: batches carry labels {', '.join(labels) or 'none'}")
    return labels[label].long().cpu()


def _timed(seconds: float, images: int) -> dict:
    return {"seconds": round(seconds, 3), "images": images, "images_per_s": round(images / max(seconds, 1e-9), 2)}


def evaluate_tokenizer(tok: Any, cfg: Config, out_dir: str | Path, data: EvalData,
                       tokenizer_info: dict | None = None, lpips: Any = None,
                       space: fidelity.FeatureSpace | None = None) -> dict:
    """Score `tok` on `data` with the cfg.eval protocol; writes metrics.json, summary.json and grids to out_dir.

    `lpips` (default LPIPS-VGG) and `space` (default from cfg.eval) can be injected, e.g. by tests.
    """
    e, res, out_dir = cfg.eval, cfg.data.resolution, Path(out_dir)
    space = space or fidelity.resolve_feature_space(e.feature_space, e.inception_weights)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(tok, torch.nn.Module):
        tok = tok.eval().to(device)
    skipped: dict[str, str] = {}
    do_zeroshot, do_probe = has_text_tower(tok), has_probe_features(tok)
    if not (do_zeroshot or do_probe):  # a pure auto-encoder, e.g. a diffusers AutoencoderKL
        name = getattr(getattr(tok, "spec", None), "name", None) or type(tok).__name__
        skipped["understanding"] = f"not applicable: {name} has no text tower and no semantic features"
    elif not do_zeroshot:
        skipped["zeroshot"] = "the tokenizer has no text tower"
    elif not do_probe:
        skipped["probe"] = "the tokenizer has no features() method"
    classnames = data.classnames(e.label) if do_zeroshot or do_probe else []
    if lpips is None:
        from vtp.losses.lpips import LPIPS

        lpips = LPIPS("vgg").to(device)
    common = {"split": "val", "dataset": cfg.data.dataset}

    # One pass over val: reconstructions, CLIP image embeddings and probe features of the same images.
    scores = ReconstructionScores(lpips)
    clip_emb, val_feats, val_labels, layout = [], {k: [] for k in PROBE_KINDS}, [], {}
    t0 = time.perf_counter()
    with torch.no_grad():
        for batch in progress(data.batches("val", e.num_samples, e.batch_size), desc="eval val"):
            images = batch["image"].to(device)
            scores.update(images, tok.decode(tok.encode(images)))
            if do_zeroshot or do_probe:
                val_labels.append(_labels(batch, e.label))
            if do_zeroshot:
                clip_emb.append(tok.image_features(images).float().cpu())
            if do_probe:
                feats, layout = probe_features(tok, images)
                for k, v in feats.items():
                    val_feats[k].append(v)
    n = scores.count
    timing = {"val_pass": _timed(time.perf_counter() - t0, n)}
    log.info("val pass: %d images in %.1f s (%.1f images/s)", n, timing["val_pass"]["seconds"],
             timing["val_pass"]["images_per_s"])
    metrics = scores.records(res, **common)

    originals, recons = scores.uint8_sets()
    k = min(e.grid_images, n)
    grid = save_grid(originals[:k], recons[:k], out_dir / "grids" / "reconstruction.png")

    t0 = time.perf_counter()
    kid_size = e.kid_subset_size if n >= e.kid_subset_size else None
    if kid_size is None:
        skipped["kid"] = f"only {n} val images, fewer than eval.kid_subset_size = {e.kid_subset_size}"
        log.warning("KID skipped: %s", skipped["kid"])
    dist = fidelity.frechet(recons, originals, space, kid_subset_size=kid_size, batch_size=e.batch_size,
                            device=device, verbose=not os.environ.get("VTP_NO_PROGRESS"))
    timing["fidelity"] = _timed(time.perf_counter() - t0, 2 * n)
    log.info("%s: %.1f s for %d images (%.1f images/s)", space.fd_key, timing["fidelity"]["seconds"], 2 * n,
             timing["fidelity"]["images_per_s"])
    meta = dict(n=n, feature_space=space.name, resolution=res, layer=space.layer,
                weights=None if space.weights is None else space.weights.name,
                reference=f"the same {n} val originals", **common)
    metrics[space.fd_key] = record(dist[space.fd_key], protocol="Frechet distance between reconstructions and "
                                   "originals (torch-fidelity, features at the extractor's input size)", **meta)
    if kid_size is not None:
        metrics[space.kid_key] = record(dist[space.kid_key], std=dist[space.kid_key + "_std"], subset_size=kid_size,
                                        protocol="KID (polynomial kernel, degree 3), reconstructions vs originals, "
                                                 f"mean over {fidelity.KID_SUBSETS} subsets (torch-fidelity)", **meta)

    if do_zeroshot:
        metrics.update(_zeroshot(tok, classnames, clip_emb, val_labels, e, res, common))
    if do_probe:
        metrics.update(_probes(tok, cfg, data, classnames, val_feats, val_labels, layout, device, timing, common))

    doc = {"config": cfg.name, "tokenizer": _describe(tok, tokenizer_info), "resolution": res,
           "dataset": cfg.data.dataset, "split": "val", "device": device, "precision": "fp32",
           "settings": to_dict(cfg)["eval"], "metrics": metrics, "skipped": skipped, "timing": timing,
           "grids": {"reconstruction": str(grid.relative_to(out_dir)), "layout": "original | reconstruction | "
                     f"|error| x {ERROR_GAIN:g}", "images": k}}
    doc = write_report(out_dir, doc)
    log.info("eval written to %s: %s", out_dir, {k: round(v, 4) for k, v in doc["summary"].items()})
    return doc


def _zeroshot(tok: Any, classnames: list[str], clip_emb: list, labels: list, e: EvalConfig, res: int,
              common: dict) -> dict:
    templates = zeroshot.get_templates(e.zeroshot_templates)
    with torch.no_grad():
        weights = zeroshot.class_embeddings(lambda texts: tok.encode_text(texts).float().cpu(), classnames, templates)
    acc = zeroshot.zeroshot_accuracy(zip(clip_emb, labels), weights)
    c = len(classnames)
    meta = dict(n=acc["n"], feature_space="clip image/text embeddings", resolution=res, label=e.label,
                num_classes=c, templates=e.zeroshot_templates, num_templates=len(templates), **common)
    proto = "zero-shot: class = argmax cosine(image, mean of normalised template embeddings)"
    return {f"zeroshot_top{k}": record(acc[f"top{k}"], protocol=f"{proto}, top-{k}", chance=zeroshot.chance(c, k),
                                       **meta) for k in (1, 5)}


def _probes(tok: Any, cfg: Config, data: EvalData, classnames: list[str], val_feats: dict, val_labels: list,
            layout: dict, device: str, timing: dict, common: dict) -> dict:
    e, res = cfg.eval, cfg.data.resolution
    train_feats, train_labels = {k: [] for k in PROBE_KINDS}, []
    t0 = time.perf_counter()
    with torch.no_grad():
        for batch in progress(data.batches("train", e.probe_train_samples, e.batch_size), desc="probe features"):
            train_labels.append(_labels(batch, e.label))
            for k, v in probe_features(tok, batch["image"].to(device))[0].items():
                train_feats[k].append(v)
    ty, vy = torch.cat(train_labels), torch.cat(val_labels)
    timing["probe_features"] = _timed(time.perf_counter() - t0, len(ty))
    settings = probe.ProbeSettings(lrs=tuple(e.probe_lrs), epochs=e.probe_epochs, batch_size=e.probe_batch_size,
                                   weight_decay=e.probe_weight_decay, holdout_fraction=e.probe_holdout, seed=cfg.seed)
    out = {}
    t0 = time.perf_counter()
    for kind, definition in PROBE_KINDS.items():
        r = probe.linear_probe(torch.cat(train_feats[kind]).to(device), ty.to(device),
                               torch.cat(val_feats[kind]).to(device), vy.to(device), len(classnames), settings)
        meta = dict(n=r["n_val"], feature_space=f"{kind} features (dim {r['dim']})", resolution=res, label=e.label,
                    num_classes=r["num_classes"], n_train=r["n_train"], n_holdout=r["n_holdout"],
                    best_lr=r["best_lr"], holdout_top1=r["holdout_top1"], epochs=e.probe_epochs,
                    probe_protocol=definition, **common)
        text = f"linear probe (standardised features, AdamW logistic regression) on {layout.get(kind, definition)}"
        for k in (1, 5):
            out[f"probe_{kind}_top{k}"] = record(r[f"top{k}"], protocol=f"{text}, top-{k}", chance=r[f"chance_top{k}"],
                                                 **meta)
    timing["probes"] = _timed(time.perf_counter() - t0, len(ty))
    return out
