"""`vtp pretrain`: the VTP stage-1 step (CLIP + SSL + reconstruction) on the shared engine.

Per optimizer step: `grad_accum` micro-steps; each draws the CLIP/SSL/reconstruction subsets of the global
micro-batch, builds multi-crop views and teacher targets for the SSL subset, runs the objective (DDP-wrapped) and
backpropagates; then clip, AdamW step, EMA teacher update. Every random draw is seeded by its position
(seed, step, micro-step[, sample]), so resume is exact and results do not depend on the number of ranks.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from vtp import dist as vdist
from vtp.config import Config
from vtp.models.tokenizer import Tokenizer
from vtp.train.data import Loader, webdataset_loader
from vtp.train.engine import Trainer, run_trainer
from vtp.train.objectives import SSLTargets, Subset, VTPObjective
from vtp.train.optim import build_optimizer, ema_momentum_at, lr_at, set_lr, teacher_temp_at
from vtp.train.runtime import autocast, generator, step_seed
from vtp.train.samples import save_reconstruction_grid, validation_images
from vtp.train.setup import apply_fsdp, export_tokenizer, freeze_unused, wrap_model


def run_pretrain(cfg: Config, resume: bool = True, loader: Loader | None = None) -> dict:
    return run_trainer(Pretrainer, cfg, resume, loader)


class Pretrainer(Trainer):
    stage = "pretrain"

    def __init__(self, cfg: Config, info: vdist.DistInfo, resume: bool, loader: Loader | None = None):
        from vtp.data.views import MultiCropViews
        from vtp.models.teacher import EMATeacher

        super().__init__(cfg, info, cfg.run_dir / "tokenizer", cfg.train.steps, resume)
        tc = cfg.train
        self.global_micro = self.micro * info.world_size
        spec = cfg.model.spec()
        self.tok = Tokenizer.from_spec(spec, bottleneck_ae_only=cfg.model.bottleneck_ae_only,
                                       clip_feature=cfg.model.clip_feature).to(info.device)
        freeze_unused(self.tok, cfg.loss)
        self.objective = VTPObjective(self.tok, cfg).to(info.device)
        self.teacher = EMATeacher(self.tok).to(info.device) if cfg.loss.ssl else None
        self.views = MultiCropViews(cfg.aug, spec.patch) if cfg.loss.ssl else None
        self.model = wrap_model(self.objective, cfg, info)
        self.fsdp = cfg.train.fsdp and info.distributed
        if self.fsdp:
            self.sharded_root = self.objective  # fully_shard works in place (and under compile)
            if self.teacher is not None:  # shard like the student so the EMA pairs equal shards
                self.teacher = apply_fsdp(self.teacher, forward_only=True)
        self.optimizer = build_optimizer(self.objective, tc.lr, tc.betas, tc.weight_decay)
        # Subset sizes per micro-step: an optimizer step's subsets are spread over its grad_accum micro-batches.
        self.subsets = {k: max(1, round(n / tc.grad_accum)) for k, n in cfg.batch_subsets().items()}
        self._loader = loader
        # Grids show the same images all run: validation images, or (for a loader passed in, e.g. in-memory
        # data) the first images that loader yields.
        self.grid_images = validation_images(cfg) if loader is None else next(loader(cfg.seed))["image"][:8]

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.objective} | ({"teacher": self.teacher} if self.teacher is not None else {})

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"model": self.optimizer}

    def make_loader(self) -> Loader:
        return self._loader or webdataset_loader(self.cfg, self.micro, self.info.rank, self.info.world_size)

    def describe(self) -> str:
        return f", {self.cfg.model.size}, objectives {'+'.join(self.cfg.loss.enabled)}, subsets {self.subsets}"

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

    def before_step(self) -> None:
        tc = self.cfg.train
        set_lr(self.optimizer, lr_at(self.step, tc.steps, tc.lr, tc.min_lr, tc.warmup_steps))

    def micro_step(self, batch: dict, micro: int, sync: bool) -> dict[str, torch.Tensor]:
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

    def update(self) -> dict[str, float]:
        tc = self.cfg.train
        params = [p for p in self.objective.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip if tc.grad_clip > 0 else float("inf"))
        self.optimizer.step()
        if self.teacher is not None:
            self.teacher.update(self.tok, ema_momentum_at(self.step, tc.steps, *tc.ema_momentum))
        out = {"grad_norm": float(grad_norm), "lr": self.optimizer.param_groups[0]["lr"]}
        if self.tok.logit_scale is not None and self.cfg.loss.clip:
            log_scale = self.tok.logit_scale.detach()
            log_scale = log_scale.full_tensor() if hasattr(log_scale, "full_tensor") else log_scale  # FSDP shard
            out["clip_temperature"] = float(1.0 / log_scale.exp())
        return out

    def save_images(self, step: int) -> list[tuple[str, Path]]:
        if not (self.info.is_main or self.fsdp):  # under FSDP every rank takes part; rank 0 writes
            return []
        grid = save_reconstruction_grid(self.tok, self.grid_images, self.out, step, write=self.info.is_main)
        return [("reconstruction.png", grid)]

    def export(self, metrics: dict) -> None:
        final = export_tokenizer(self.objective, self.fsdp)  # collective under FSDP
        if self.info.is_main:
            final.save_pretrained(self.out)


def _or_uniform(probs: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Targets for a placeholder row (its loss weight is 0): any distribution, so the uniform one."""
    return probs if probs.shape[0] == like.shape[0] else torch.full_like(like, 1.0 / like.shape[-1]).float()
