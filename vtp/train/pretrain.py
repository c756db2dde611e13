"""`vtp pretrain`: the VTP stage-1 step (CLIP + SSL + reconstruction) on the shared engine.

Per optimizer step: `prepare_step` draws the SSL and reconstruction subsets of the step's global batch, builds
the SSL subset's multi-crop views and teacher targets (Sinkhorn over the whole subset) and, under accumulation,
caches the step's CLIP embeddings; then `grad_accum` micro-steps run the objective (DDP-wrapped) and
backpropagate; then clip, AdamW step, the logit-scale clamp, EMA teacher update. Every random draw is seeded by
its position (seed, step[, micro-step][, sample]), so resume is exact, and splitting a batch into ranks or
micro-batches leaves the step unchanged (vtp.train.objectives says how, and where KoLeo is the exception).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from vtp import dist as vdist
from vtp.config import Config, ConfigError
from vtp.losses.clip import clamp_logit_scale_
from vtp.models.tokenizer import Tokenizer
from vtp.train.data import Loader, webdataset_loader
from vtp.train.engine import Trainer, run_trainer
from vtp.train.objectives import ClipCache, MicroPlan, SSLTargets, Subset, VTPObjective
from vtp.train.optim import build_optimizer, ema_momentum_at, lr_at, set_lr, teacher_temp_at
from vtp.train.runtime import autocast, generator, part, step_seed
from vtp.train.samples import save_reconstruction_grid, validation_images
from vtp.train.setup import apply_fsdp, compile_blocks, export_tokenizer, freeze_unused, wrap_model


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
        self.shares = info.world_size * self.grad_accum  # per-micro-batch means that make up one step
        spec = cfg.model.spec()
        self.tok = Tokenizer.from_spec(spec, bottleneck_ae_only=cfg.model.bottleneck_ae_only,
                                       clip_feature=cfg.model.clip_feature).to(info.device)
        freeze_unused(self.tok, cfg.loss)
        self.objective = VTPObjective(self.tok, cfg).to(info.device)
        self.teacher = EMATeacher(self.tok).to(info.device) if cfg.loss.ssl else None
        self.views = MultiCropViews(cfg.aug, spec.patch) if cfg.loss.ssl else None
        self.model = wrap_model(self.objective, cfg, info)
        if tc.compile and self.teacher is not None:
            compile_blocks(self.teacher)
        self.fsdp = cfg.train.fsdp and info.distributed
        if self.fsdp:
            self.sharded_root = self.objective  # fully_shard works in place (and under compile)
            if self.teacher is not None:  # shard like the student so the EMA pairs equal shards
                self.teacher = apply_fsdp(self.teacher, forward_only=True)
        self.optimizer = build_optimizer(self.objective, tc.lr, tc.betas, tc.weight_decay)
        # Global subset sizes per step; CLIP takes an equal share of every rank's micro-batch.
        self.subsets = cfg.batch_subsets()
        self.clip_rows = self.subsets.get("clip", 0) // self.shares
        if cfg.loss.clip and self.clip_rows * self.shares != self.subsets["clip"]:
            raise ConfigError(f"loss.batch_ratio = {list(cfg.loss.batch_ratio)} gives a CLIP subset of "
                              f"{self.subsets['clip']} images, which must split evenly over world size x grad_accum "
                              f"= {self.shares} (open_clip's all-gather needs equal rows per rank)")
        self.freeze_prototypes_until = round(cfg.loss.dino.freeze_last_layer_fraction * tc.steps)
        self.plan: list[MicroPlan] = []
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

    def loss_network_flops(self) -> float:
        rec = self.objective.rec_loss
        if rec is None or not self.plan:
            return 0.0
        return rec.lpips_flops(len(self.plan[-1].rec.index), self.cfg.data.resolution, self.info.device)

    # -- one step -------------------------------------------------------------------------------------------------
    def _subsets(self, gen: torch.Generator, size: int) -> list[Subset]:
        """A random subset of the step's global batch, as each micro-batch of this rank holds it. Global row
        layout: micro-batch m, rank r, local row i -> m * global_micro + r * micro + i."""
        rows = torch.randperm(self.batch_size, generator=gen)[:size].sort().values
        out = []
        for m in range(self.grad_accum):
            lo = m * self.global_micro + self.info.rank * self.micro
            mine = (rows >= lo) & (rows < lo + self.micro)
            out.append(Subset.of((rows[mine] - lo).to(self.info.device), mine.nonzero()[:, 0], size, self.shares))
        return out

    def _ssl_targets(self, micro_batches: list[dict], subsets: list[Subset], temp: float) -> list[SSLTargets]:
        """Multi-crop views of each micro-batch's SSL rows (parameters drawn for the whole global subset) and the
        teacher's targets, normalised over the step's whole subset; the centres move once per step."""
        views, cls, patch = [], [], []
        for batch, sub in zip(micro_batches, subsets):
            images = batch["image"].to(self.info.device, non_blocking=True)
            with part("views_masks"):
                v = self.views(images[sub.index], generator(self.cfg.seed, self.step, 1), sub.position, sub.size)
            with part("teacher"), torch.no_grad(), autocast(self.info.device, self.cfg.train.precision):
                out = self.teacher(v["global_crops"], patch_mask=v["masks"])
            c, p = out["cls_logits"].float(), out["patch_logits"].float()
            if sub.scale == 0:  # a placeholder row (weight 0): it joins no statistic
                c, p = c[:0], p[:0]
            views.append((v, out["cls_logits"], out["patch_logits"]))
            cls.append(c)
            patch.append(p)
        dino_loss, ibot_loss = self.objective.dino_loss, self.objective.ibot_loss
        with part("ssl_targets"), torch.no_grad():  # Sinkhorn-Knopp or centering, over the whole step
            all_cls, all_patch = torch.cat(cls), torch.cat(patch)
            dino = dino_loss.teacher_probs(all_cls, temp).split([len(c) for c in cls])
            ibot = ibot_loss.teacher_probs(all_patch, temp).split([len(p) for p in patch])
            dino_loss.update_center(all_cls)
            ibot_loss.update_center(all_patch)
        return [SSLTargets(v["global_crops"], v["local_crops"], v["masks"], list(_or_uniform(d, c_like).chunk(2)),
                           _or_uniform(i, p_like))
                for (v, c_like, p_like), d, i in zip(views, dino, ibot)]

    def _seed_micro(self, micro: int) -> None:
        # Per-rank randomness inside the model (drop path, Gaussian bottleneck noise): reproducible per micro-step;
        # the CLIP cache pass and its micro-step draw the same drop-path masks.
        torch.manual_seed(step_seed(self.cfg.seed, self.step, micro, self.info.rank))

    def _clip_cache(self, micro_batches: list[dict]) -> ClipCache:
        images, texts = [], []
        for m, batch in enumerate(micro_batches):
            self._seed_micro(m)
            with torch.no_grad(), autocast(self.info.device, self.cfg.train.precision):
                img, txt = self.model(batch["image"].to(self.info.device, non_blocking=True), list(batch["caption"]),
                                      self.plan[m], clip_only=True)
            images.append(img)
            texts.append(txt)
        return ClipCache(images, texts)

    def before_step(self) -> None:
        tc = self.cfg.train
        set_lr(self.optimizer, lr_at(self.step, tc.steps, tc.lr, tc.min_lr, tc.warmup_steps))

    def prepare_step(self, micro_batches: list[dict]) -> None:
        cfg, accum = self.cfg, len(micro_batches)
        for batch in micro_batches:
            if batch["image"].shape[0] != self.micro:
                raise ValueError(f"loader gave a batch of {batch['image'].shape[0]} images; expected {self.micro}")
        gen = generator(cfg.seed, self.step)
        rec = self._subsets(gen, self.subsets["rec"]) if cfg.loss.rec else [None] * accum
        ssl = self._subsets(gen, self.subsets["ssl"]) if cfg.loss.ssl else [None] * accum
        targets = [None] * accum
        if cfg.loss.ssl:
            temp = teacher_temp_at(self.step, cfg.train.steps, cfg.loss.dino.teacher_temp_warmup,
                                   cfg.loss.dino.teacher_temp, cfg.loss.dino.warmup_fraction)
            targets = self._ssl_targets(micro_batches, ssl, temp)
        self.plan = [MicroPlan(m, accum, self.clip_rows, rec[m], ssl[m], targets[m], None) for m in range(accum)]
        if cfg.loss.clip and accum > 1:
            with part("clip_cache"):
                cache = self._clip_cache(micro_batches)
            for p in self.plan:
                p.clip_cache = cache

    def micro_step(self, batch: dict, micro: int, sync: bool) -> dict[str, torch.Tensor]:
        cfg, dev = self.cfg, self.info.device
        images = batch["image"].to(dev, non_blocking=True)
        self._seed_micro(micro)
        captions = list(batch["caption"]) if cfg.loss.clip else None
        ctx = self.model.no_sync() if (not sync and isinstance(self.model, DDP)) else contextlib.nullcontext()
        with ctx:
            with part("forward"), autocast(dev, cfg.train.precision):
                parts, loss = self.model(images, captions, self.plan[micro])
            with part("backward"):
                (loss / self.grad_accum).backward()
        return {k: v.detach().float() for k, v in parts.items()}

    def update(self) -> dict[str, float]:
        tc = self.cfg.train
        head = self.tok.dino_head
        if head is not None and self.step < self.freeze_prototypes_until:  # DINOv2's freeze_last_layer
            head.prototypes.grad = None
        params = [p for p in self.objective.parameters() if p.grad is not None]
        with part("optimizer"):
            grad_norm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip if tc.grad_clip > 0 else float("inf"))
            self.optimizer.step()
        if self.tok.logit_scale is not None and self.cfg.loss.clip:
            clamp_logit_scale_(self.tok.logit_scale)
        if self.teacher is not None:
            with part("ema"):
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
