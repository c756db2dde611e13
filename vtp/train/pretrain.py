"""`vtp pretrain`: the VTP stage-1 loop (CLIP + SSL + reconstruction), one code path from 1 CPU to many GPUs.

Per optimizer step: `grad_accum` micro-steps; each draws the CLIP/SSL/reconstruction subsets of the global
micro-batch, builds multi-crop views and teacher targets for the SSL subset, runs the objective (DDP-wrapped) and
backpropagates; then clip, AdamW step, EMA teacher update. Every random draw is seeded by its position
(seed, step, micro-step[, sample]), so resume is exact and results do not depend on the number of ranks.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import time
from pathlib import Path
from typing import Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.flop_counter import FlopCounterMode

from vtp import dist as vdist
from vtp.config import Config, to_dict
from vtp.log import log, progress
from vtp.models.tokenizer import Tokenizer
from vtp.runinfo import RunRecord
from vtp.train import checkpoint as ckpt
from vtp.train.data import Loader, stream, webdataset_loader
from vtp.train.engine import (GracefulStop, Interrupted, Live, Meter, NonFiniteLoss, autocast, check_finite,
                              config_fingerprint, generator, measure_matmul_flops, set_determinism, step_seed)
from vtp.train.objectives import SSLTargets, Subset, VTPObjective
from vtp.train.optim import build_optimizer, ema_momentum_at, lr_at, set_lr, teacher_temp_at
from vtp.train.samples import save_reconstruction_grid, validation_images
from vtp.train.setup import apply_fsdp, export_tokenizer, freeze_unused, local_micro_batch, wrap_model


def run_pretrain(cfg: Config, stage: str = "pretrain", resume: bool = True, loader: Loader | None = None) -> dict:
    if stage == "decoder-gan":
        from vtp.train.decoder_gan import run_decoder_gan

        return run_decoder_gan(cfg, resume=resume, loader=loader)
    info = vdist.init_distributed()
    try:
        return Pretrainer(cfg, info, resume, loader).fit()
    finally:
        vdist.shutdown()


class Pretrainer:
    def __init__(self, cfg: Config, info: vdist.DistInfo, resume: bool, loader: Loader | None):
        from vtp.data.views import MultiCropViews
        from vtp.models.teacher import EMATeacher

        self.cfg, self.info, tc = cfg, info, cfg.train
        self.micro = local_micro_batch(cfg, info.world_size)
        self.global_micro = self.micro * info.world_size
        set_determinism(tc.deterministic)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.out = cfg.run_dir / "tokenizer"
        self.ckpt_dir = self.out / "checkpoints"
        spec = cfg.model.spec()
        self.tok = Tokenizer.from_spec(spec, bottleneck_ae_only=cfg.model.bottleneck_ae_only,
                                       clip_feature=cfg.model.clip_feature).to(info.device)
        freeze_unused(self.tok, cfg.loss)
        self.objective = VTPObjective(self.tok, cfg).to(info.device)
        self.teacher = EMATeacher(self.tok).to(info.device) if cfg.loss.ssl else None
        self.views = MultiCropViews(cfg.aug, spec.patch) if cfg.loss.ssl else None
        self.model = wrap_model(self.objective, cfg, info)
        self.fsdp = cfg.train.fsdp and info.distributed
        if self.fsdp and self.teacher is not None:  # shard like the student so the EMA pairs equal shards
            self.teacher = apply_fsdp(self.teacher, forward_only=True)
        self.optimizer = build_optimizer(self.objective, tc)
        # Subset sizes per micro-step: an optimizer step's subsets are spread over its grad_accum micro-batches.
        self.subsets = {k: max(1, round(n / tc.grad_accum)) for k, n in cfg.batch_subsets().items()}
        self.fingerprint = config_fingerprint(cfg)
        self.step, self.skipped, self.samples = 0, 0, 0
        self.flops_per_step: float | None = None
        if resume:
            self._resume()
        elif info.is_main and self.ckpt_dir.exists():
            self._set_aside("--fresh")
        self.loader = loader or webdataset_loader(cfg, self.micro, info.rank, info.world_size)
        # Grids show the same images all run: validation images, or (for a loader passed in, e.g. in-memory
        # data) the first images that loader yields.
        self.grid_images = (validation_images(cfg) if loader is None else next(loader(cfg.seed))["image"][:8])

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def _modules(self) -> dict[str, nn.Module]:
        mods: dict[str, nn.Module] = {"model": self.objective}
        if self.teacher is not None:
            mods["teacher"] = self.teacher
        return mods

    def _set_aside(self, why: str) -> None:
        stale = self.ckpt_dir.with_name(f"checkpoints.stale-{time.strftime('%Y%m%d-%H%M%S')}")
        log.warning("%s: moving existing checkpoints to %s (nothing is deleted)", why, stale)
        shutil.move(self.ckpt_dir, stale)

    def _resume(self) -> None:
        ckpt.clean_partial(self.ckpt_dir)
        path = ckpt.latest(self.ckpt_dir)
        if path is None:
            return
        saved = json.loads((path / "state.json").read_text())
        if saved.get("fingerprint") != self.fingerprint:
            vdist.barrier()
            if self.info.is_main:
                self._set_aside(f"configuration changed since {path.name}")
            vdist.barrier()
            return
        state = ckpt.load(path, self._modules(), {"model": self.optimizer})
        self.step, self.skipped, self.samples = state["step"], state["skipped_steps"], state["samples_seen"]
        log.info("resumed from %s (step %d)", path, self.step)

    def save(self) -> None:
        state = {"fingerprint": self.fingerprint, "skipped_steps": self.skipped, "samples_seen": self.samples,
                 "config": self.cfg.name}
        path = ckpt.save(self.ckpt_dir, self.step, self._modules(), {"model": self.optimizer}, state,
                         self.cfg.train.keep_checkpoints)
        log.info("checkpoint %s", path)

    # -- one step -------------------------------------------------------------------------------------------------
    def _subset(self, gen: torch.Generator, size: int) -> Subset:
        rows = torch.randperm(self.global_micro, generator=gen)[:size].sort().values
        lo = self.info.rank * self.micro
        mine = (rows >= lo) & (rows < lo + self.micro)
        return Subset.of((rows[mine] - lo).to(self.info.device), mine.nonzero()[:, 0], size, self.info.world_size)

    def _ssl_targets(self, images: torch.Tensor, sub: Subset, temp: float, keys: tuple[int, ...]) -> SSLTargets:
        """Multi-crop views (parameters drawn for the whole global subset, this rank's rows applied) and the
        teacher's targets."""
        views = self.views(images[sub.index], generator(self.cfg.seed, *keys, 1), sub.position, sub.size)
        glob, masks, local = views["global_crops"], views["masks"], views["local_crops"]
        with torch.no_grad(), autocast(self.info.device, self.cfg.train.precision):
            out = self.teacher(glob, patch_mask=masks)
            cls_logits, patch_logits = out["cls_logits"].float(), out["patch_logits"].float()
            dino_loss, ibot_loss = self.objective.dino_loss, self.objective.ibot_loss
            if sub.scale == 0:  # this rank's placeholder row: join the collectives with no rows, weight 0
                cls_logits, patch_logits = cls_logits[:0], patch_logits[:0]
            dino = _or_uniform(dino_loss.teacher_probs(cls_logits, temp), out["cls_logits"])
            ibot = _or_uniform(ibot_loss.teacher_probs(patch_logits, temp), out["patch_logits"])
            dino_loss.update_center(cls_logits)
            ibot_loss.update_center(patch_logits)
        return SSLTargets(glob, local, masks, list(dino.chunk(2)), ibot)

    def _micro_step(self, batch: dict, micro: int, sync: bool) -> dict[str, torch.Tensor]:
        cfg, dev = self.cfg, self.info.device
        images = batch["image"].to(dev, non_blocking=True)
        if images.shape[0] != self.micro:
            raise ValueError(f"loader gave a batch of {images.shape[0]} images; expected {self.micro}")
        keys = (self.step, micro)
        gen = generator(cfg.seed, *keys)
        # Per-rank randomness inside the model (drop path, Gaussian bottleneck noise): reproducible per step.
        torch.manual_seed(step_seed(cfg.seed, *keys, self.info.rank))
        rec = self._subset(gen, self.subsets["rec"]) if cfg.loss.rec else None
        ssl = self._subset(gen, self.subsets["ssl"]) if cfg.loss.ssl else None
        captions = list(batch["caption"]) if cfg.loss.clip else None
        temp = teacher_temp_at(self.step, cfg.train.steps, cfg.loss.dino.teacher_temp_warmup,
                               cfg.loss.dino.teacher_temp, cfg.loss.dino.warmup_fraction)
        targets = self._ssl_targets(images, ssl, temp, keys) if ssl is not None else None
        ctx = self.model.no_sync() if (not sync and isinstance(self.model, DDP)) else contextlib.nullcontext()
        with ctx:
            with autocast(dev, cfg.train.precision):
                parts = self.model(images, captions, rec, ssl, targets)
            (parts["loss"] / cfg.train.grad_accum).backward()
        return {k: v.detach().float() for k, v in parts.items()}

    def _count_flops(self, batch: dict) -> float:
        """FLOPs of one optimizer step (all ranks), counted on a real micro-step whose effects are then undone:
        the counter may decompose fused kernels, so the counted pass must not be the one that trains."""
        buffers = [b.clone() for b in self.objective.buffers()]
        with FlopCounterMode(display=False) as counter:
            self._micro_step(batch, 0, sync=True)
        for b, saved in zip(self.objective.buffers(), buffers):
            b.copy_(saved)
        self.optimizer.zero_grad(set_to_none=True)
        return counter.get_total_flops() * self.cfg.train.grad_accum * self.info.world_size

    def _train_step(self, batches: Iterator[dict]) -> dict[str, float] | None:
        tc, dev = self.cfg.train, self.info.device
        micro_batches = [next(batches) for _ in range(tc.grad_accum)]
        if self.flops_per_step is None:
            self.flops_per_step = self._count_flops(micro_batches[0])
        set_lr(self.optimizer, lr_at(self.step, tc.steps, tc.lr, tc.min_lr, tc.warmup_steps))
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, torch.Tensor] = {}
        for micro, batch in enumerate(micro_batches):
            parts = self._micro_step(batch, micro, sync=micro == tc.grad_accum - 1)
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + v / tc.grad_accum
        bad = check_finite(totals, self.step, dev)
        if bad is not None:
            if tc.nan_policy == "stop":
                raise NonFiniteLoss(f"non-finite {bad} loss at step {self.step}; the last good checkpoint in "
                                    f"{self.ckpt_dir} is kept (set train.nan_policy: skip to skip such steps)")
            log.warning("non-finite %s loss at step %d: step skipped", bad, self.step)
            self.skipped += 1
            self.optimizer.zero_grad(set_to_none=True)
            return None
        params = [p for p in self.objective.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip if tc.grad_clip > 0 else float("inf"))
        self.optimizer.step()
        if self.teacher is not None:
            self.teacher.update(self.tok, ema_momentum_at(self.step, tc.steps, *tc.ema_momentum))
        logged = vdist.all_reduce_mean(torch.stack([totals[k] for k in sorted(totals)]))
        out = dict(zip(sorted(totals), logged.tolist()))
        out["grad_norm"] = float(grad_norm)
        out["lr"] = self.optimizer.param_groups[0]["lr"]
        if self.tok.logit_scale is not None and self.cfg.loss.clip:
            log_scale = self.tok.logit_scale.detach()
            log_scale = log_scale.full_tensor() if hasattr(log_scale, "full_tensor") else log_scale  # FSDP shard
            out["clip_temperature"] = float(1.0 / log_scale.exp())
        return out

    # -- the loop -------------------------------------------------------------------------------------------------
    def fit(self) -> dict:
        cfg, tc, info = self.cfg, self.cfg.train, self.info
        record = RunRecord(self.out, "pretrain", to_dict(cfg), cfg.seed) if info.is_main else None
        live = Live(self.out / "dvclive", resume=self.step > 0, enabled=info.is_main)
        peak = tc.peak_tflops * 1e12 if tc.peak_tflops else measure_matmul_flops(info.device)
        batches = stream(self.loader, cfg.seed, self.step * tc.grad_accum)
        meter, last = Meter(), {}
        log.info("pretrain %s: %s, objectives %s, %d steps x %d images (%d ranks x %d micro x %d accum), subsets %s",
                 cfg.name, cfg.model.size, "+".join(cfg.loss.enabled), tc.steps, tc.batch_size, info.world_size,
                 self.micro, tc.grad_accum, self.subsets)
        t_start = time.perf_counter()
        with GracefulStop() as stop:
            bar = progress(range(self.step, tc.steps), total=tc.steps, initial=self.step, desc=f"pretrain {cfg.name}")
            for _ in bar:
                first = self.flops_per_step is None
                out = self._train_step(batches)
                if first:
                    meter = Meter()  # the first step also counted FLOPs; keep it out of the throughput
                self.step += 1
                self.samples += tc.batch_size
                if out is not None:
                    meter.add(out, tc.batch_size)
                if self.step % tc.log_every == 0 or self.step == tc.steps:
                    means, ips, sec = meter.flush()
                    if means:
                        achieved = self.flops_per_step / sec if sec > 0 else 0.0
                        last = {**means, "images_per_s": ips, "flops_per_s": achieved, "mfu": achieved / peak}
                        live.log(self.step, last)
                        if hasattr(bar, "set_postfix"):
                            bar.set_postfix(loss=f"{means['loss']:.3f}", ips=f"{ips:.0f}", refresh=False)
                # Under FSDP every rank takes part (the blocks all-gather their shards); rank 0 writes.
                if self.step % tc.image_every == 0 and (info.is_main or self.fsdp):
                    if self.fsdp:  # the grid calls encode/decode, not forward: gather the root's shards first
                        self.model.unshard()
                    grid = save_reconstruction_grid(self.tok, self.grid_images, self.out, self.step,
                                                    write=info.is_main)
                    if self.fsdp:
                        self.model.reshard()
                    live.log_image("reconstruction.png", grid)
                if self.step % tc.checkpoint_every == 0 and self.step < tc.steps:
                    self.save()
                if stop.requested(info.device):
                    self.save()
                    live.close()
                    raise Interrupted(f"stopped by signal at step {self.step}; checkpoint saved, "
                                      f"re-run the same command to resume")
        self.save()
        metrics = {"config": cfg.name, "step": self.step, "samples_seen": self.samples,
                   "skipped_steps": self.skipped, "wall_s": time.perf_counter() - t_start,
                   "flops_per_step": self.flops_per_step, "total_flops": (self.flops_per_step or 0) * tc.steps,
                   "peak_flops": peak, "peak_source": "declared" if tc.peak_tflops else "measured fp32 matmul",
                   "flops_convention": "2 x MACs, forward+backward, measured by torch.utils.flop_counter", **last}
        final = export_tokenizer(self.objective, self.fsdp)  # collective under FSDP
        if info.is_main:
            final.save_pretrained(self.out)
            (self.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
            record.finish(metrics=metrics)
        live.close()
        log.info("pretrain %s done: %s", cfg.name, {k: round(v, 4) for k, v in last.items()})
        return metrics


def _or_uniform(probs: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Targets for a placeholder row (its loss weight is 0): any distribution, so the uniform one."""
    return probs if probs.shape[0] == like.shape[0] else torch.full_like(like, 1.0 / like.shape[-1]).float()
