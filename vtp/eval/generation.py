"""`vtp evaluate-generation`: how close the DiT's samples come to the validation split, and how fast they got there.

Metrics (vtp.eval.fidelity, each named by its feature space: `fd_effnetlite0` offline, `fid_inception` only with
the real Inception weights): Frechet distance, KID, precision/recall and the Inception-Score analogue of
`samples.npz` against `gen_eval.num_reference` val images, with the IS of those real images beside it as the
ceiling to read it against. Every value depends on the sample count, the reference set and the sampler: all three
are recorded with it. Convergence: the FD of `gen_eval.convergence_num` fresh samples (same seeds every time) from
each kept EMA snapshot (`dit.snapshot_every`) and from the final model, against the same reference features.

Images are read in batches (vtp.eval.image_sets); under torchrun every rank extracts its contiguous block and the
features are gathered in order, so the numbers do not depend on the number of ranks. Writes
runs/<cfg>/generation/: metrics.json + summary.json (vtp.eval.report), convergence.json, run.json.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from vtp import dist as vdist
from vtp.config import Config, ConfigError, to_dict
from vtp.eval import fidelity
from vtp.eval.image_sets import open_images
from vtp.eval.report import record, write_report
from vtp.fileio import write_json_atomic
from vtp.log import log, progress
from vtp.runinfo import RunRecord


def _gathered(feats: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    """Every rank's rows in rank order, on CPU (gathered on the process group's device: gloo CPU, NCCL CUDA)."""
    return {k: vdist.all_gather_rows(v.to(device)).cpu() for k, v in feats.items()}


def reference_features(cfg: Config, space: fidelity.FeatureSpace, net, device) -> tuple[dict, int]:
    """Features of the first `gen_eval.num_reference` val images (this rank's block of batches, then gathered)."""
    from vtp.data.loader import eval_loader
    from vtp.diffusion.generate import to_uint8

    g = cfg.gen_eval
    loader = eval_loader(cfg, "val", batch_size=g.batch_size, num_samples=g.num_reference)
    mine = vdist.block(len(loader))

    def batches():
        for i, batch in enumerate(progress(loader, desc="reference features")):
            if i in mine:
                yield to_uint8(batch["image"])

    feats = fidelity.extract(batches(), space, device, net) if len(mine) else _empty(net, space, device)
    feats = _gathered(feats, device)
    return feats, len(feats["features"])


def _empty(net, space, device) -> dict[str, torch.Tensor]:
    """A rank with no rows still joins the gather: zero rows of the right widths."""
    probe = fidelity.extract([torch.zeros(1, 3, 8, 8, dtype=torch.uint8)], space, device, net)
    return {k: v[:0] for k, v in probe.items()}


def sample_features(path: Path, space, net, device, batch_size: int) -> dict[str, torch.Tensor]:
    images = open_images(path)
    mine = vdist.block(len(images))
    feats = fidelity.extract(progress(images.batches(mine, batch_size), desc="sample features"), space, device,
                             net) if len(mine) else _empty(net, space, device)
    return _gathered(feats, device)


def convergence(cfg: Config, space, net, device, reference: dict) -> tuple[list[dict], str | None]:
    """FD against `reference` of fresh samples from every EMA snapshot and the final model; (points, why not)."""
    from vtp.data.latents import LatentStats
    from vtp.diffusion.generate import decoded_samples, sampler_spec
    from vtp.models.external import load_tokenizer
    from vtp.train.dit import load_dit, snapshot_steps

    g, dit_dir = cfg.gen_eval, cfg.run_dir / "dit"
    steps = snapshot_steps(dit_dir)
    if not steps:
        return [], "no EMA snapshots in the DiT run (set dit.snapshot_every)"
    stats, spec = LatentStats.load(dit_dir), sampler_spec(cfg)
    points, final = [], json.loads((dit_dir / "metrics.json").read_text()).get("step")
    for step in [*steps, None] if final not in steps else steps:
        dit, dinfo = load_dit(dit_dir, "ema", step, device)
        tok = load_tokenizer(dinfo["tokenizer"]["dir"]).to(device).eval()
        gen = (images for images, _ in decoded_samples(dit, tok, stats, spec, vdist.block(g.convergence_num),
                                                       dinfo["num_classes"], cfg.sample.batch_size, device,
                                                       cfg.train.precision, desc=f"convergence step {step}"))
        feats = _gathered(fidelity.extract(gen, space, device, net), device)
        fd = fidelity.distribution_metrics(feats, reference, space, g.kid_subset_size)[space.fd_key]
        points.append({"step": final if step is None else step, space.fd_key: fd, "n": len(feats["features"])})
        log.info("convergence %s: step %s %s = %.3f", cfg.name, points[-1]["step"], space.fd_key, fd)
    return points, None


def run_evaluate_generation(cfg: Config) -> dict:
    info = vdist.init_distributed()
    try:
        return _run(cfg, info)
    finally:
        vdist.shutdown()


def _run(cfg: Config, info) -> dict:
    g, out = cfg.gen_eval, cfg.run_dir / "generation"
    samples_path = cfg.run_dir / "samples" / "samples.npz"
    try:
        space = fidelity.resolve_feature_space(cfg.eval.feature_space, cfg.eval.inception_weights)
    except FileNotFoundError as err:
        raise ConfigError(f"config {cfg.name!r}: eval.feature_space = {cfg.eval.feature_space!r}: {err}") from None
    if not samples_path.is_file():
        raise FileNotFoundError(f"{samples_path}: no samples; run `vtp sample --config {cfg.name}` first")
    sampled = json.loads((cfg.run_dir / "samples" / "metrics.json").read_text())
    run = RunRecord(out, "evaluate-generation", to_dict(cfg), cfg.seed) if info.is_main else None
    try:
        net = fidelity.extractor(space, info.device)
        t0 = time.perf_counter()
        reference, n_ref = reference_features(cfg, space, net, info.device)
        generated = sample_features(samples_path, space, net, info.device, g.batch_size)
        n_gen, seconds = len(generated["features"]), time.perf_counter() - t0
        values = fidelity.distribution_metrics(generated, reference, space, g.kid_subset_size, g.prc_neighborhood,
                                               g.is_splits)
        ceiling = fidelity.distribution_metrics(reference, reference, space, g.kid_subset_size, g.prc_neighborhood,
                                                g.is_splits)[space.is_key]
        points, why = convergence(cfg, space, net, info.device, reference)
    except BaseException:
        if run:
            run.finish("failed")
        raise
    doc = _document(cfg, space, values, ceiling, n_gen, n_ref, sampled, points, why, seconds)
    if info.is_main:
        doc = write_report(out, doc)
        write_json_atomic(out / "convergence.json", {  # DVC plots it: one list of {step, <fd key>}
            "config": cfg.name, "metric": space.fd_key, "n": g.convergence_num, "skipped": why,
            "points": [{"step": p["step"], space.fd_key: p[space.fd_key]} for p in points]})
        run.finish("ok", metrics=doc["summary"])
        log.info("evaluate-generation %s: %s", cfg.name, {k: round(v, 4) for k, v in values.items()})
    vdist.barrier()
    return doc


def _document(cfg, space, values, ceiling, n_gen, n_ref, sampled, points, why, seconds) -> dict:
    g, res = cfg.gen_eval, cfg.data.resolution
    kid_size = min(g.kid_subset_size, n_gen, n_ref)
    meta = dict(n=n_gen, feature_space=space.name, resolution=res, layer=space.layer, split="val",
                dataset=cfg.data.dataset, reference=f"the first {n_ref} val images", n_reference=n_ref,
                sampler=sampled["sampler"], nfe_per_batch=sampled.get("nfe_per_batch"),
                dit_weights=sampled.get("weights"), dit_checkpoint=sampled.get("checkpoint"))
    fd, kid, is_ = space.fd_key, space.kid_key, space.is_key
    metrics = {
        fd: record(values[fd], protocol="Frechet distance, DiT samples vs real val images (torch-fidelity)", **meta),
        kid: record(values[kid], std=values[kid + "_std"], subset_size=kid_size,
                    protocol=f"KID (cubic polynomial kernel), mean over {fidelity.KID_SUBSETS} subsets", **meta),
        f"precision_{space.name}": record(values[f"precision_{space.name}"], neighborhood=g.prc_neighborhood,
                                          protocol="precision: share of samples inside the real k-NN manifold "
                                                   "(Kynkaanniemi et al. 2019, torch-fidelity)", **meta),
        f"recall_{space.name}": record(values[f"recall_{space.name}"], neighborhood=g.prc_neighborhood,
                                       protocol="recall: share of real images inside the samples' k-NN manifold",
                                       **meta),
        is_: record(values[is_], std=values[is_ + "_std"], splits=g.is_splits, real_images_is=ceiling,
                    protocol=f"Inception-Score analogue: exp E[KL(p(y|x) || p(y))] over the {space.name} "
                             "ImageNet classifier's logits (torch-fidelity's isc); the real images' value beside it",
                    **meta),
    }
    if sampled.get("judge_accuracy") is not None:  # the independent judge's verdict, carried into one summary
        metrics["judge_accuracy"] = record(sampled["judge_accuracy"], n=n_gen, feature_space="judge classifier",
                                           resolution=res, chance=sampled.get("judge_chance"),
                                           protocol="share of samples the real-image classifier gives the "
                                                    "conditioning class (vtp sample)")
    return {"config": cfg.name, "resolution": res, "dataset": cfg.data.dataset, "split": "val",
            "settings": to_dict(cfg)["gen_eval"], "sampler": sampled["sampler"], "metrics": metrics,
            "convergence": points, "skipped": {"convergence": why} if why else {},
            "timing": {"features": {"seconds": round(seconds, 2), "images": n_gen + n_ref}}}
