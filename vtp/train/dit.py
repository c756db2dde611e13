"""`vtp train-dit`: a class-conditional DiT trained by flow matching on a tokenizer's standardised latents, on
the shared engine (checkpoints, exact resume, DDP/FSDP, bf16 on CUDA, dvclive, NaN policy) with an EMA.

Every random draw (noise, time, label dropout) is made for the global micro-batch from a generator seeded by
(seed, step, micro-step) and each rank takes its rows, so a run does not depend on the number of ranks.
Reads runs/<cfg>/latents, writes runs/<cfg>/dit: model.safetensors (EMA weights), raw.safetensors, config.json
and the latent statistics it trained with (sampling un-applies exactly these).
"""
from __future__ import annotations

import contextlib
import json
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import torch
from safetensors.torch import save
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.nn.parallel import DistributedDataParallel as DDP

from vtp import dist as vdist
from vtp.config import Config, ConfigError
from vtp.data.latents import STATS, LatentStats, latent_loader, read_manifest
from vtp.diffusion.flow import flow_matching_loss, interpolate, sample_timesteps, velocity_target
from vtp.fileio import write_bytes_atomic, write_json_atomic
from vtp.models.dit import DiT
from vtp.models.ema import EMA
from vtp.models.registry import get_dit_spec
from vtp.train.data import Loader
from vtp.train.engine import Trainer, run_trainer
from vtp.train.optim import build_optimizer, lr_at, set_lr
from vtp.train.runtime import autocast, generator
from vtp.train.setup import apply_fsdp, wrap_model

FORMAT = "vtp-dit"
SNAPSHOTS = "ema"  # checkpoints/ema/: the EMA weights kept every dit.snapshot_every steps


def run_train_dit(cfg: Config, resume: bool = True, loader: Loader | None = None) -> dict:
    return run_trainer(DiTTrainer, cfg, resume, loader)


def build_dit(cfg: Config, latents_manifest: dict) -> tuple[DiT, dict]:
    """The DiT for these latents: channels and grid from the latents, classes from the conditioning label set."""
    dc = cfg.dit
    sets = latents_manifest["label_sets"]
    if dc.label not in sets:
        raise ConfigError(f"config {cfg.name!r}: dit.label = {dc.label!r}: the latents carry label sets "
                          f"{', '.join(sets)}")
    channels, h, w = latents_manifest["shape"]
    spec = get_dit_spec(dc.size)
    if dc.class_dropout is not None:
        spec = replace(spec, class_dropout=dc.class_dropout)
    if h % spec.patch or w % spec.patch:
        raise ConfigError(f"config {cfg.name!r}: dit.size = {dc.size!r}: patch {spec.patch} does not divide the "
                          f"latent grid {h}x{w} of {latents_manifest['tokenizer']['dir']}")
    info = {"format": FORMAT, "version": 1, "spec": asdict(spec), "in_channels": channels, "grid": [h, w],
            "num_classes": len(sets[dc.label]), "label": dc.label, "class_names": sets[dc.label],
            "tokenizer": latents_manifest["tokenizer"]}
    return DiT(spec, channels, (h, w), len(sets[dc.label])), info


class DiTTrainer(Trainer):
    stage = "train-dit"

    def __init__(self, cfg: Config, info: vdist.DistInfo, resume: bool, loader: Loader | None = None):
        dc = cfg.dit
        self.latents_dir = cfg.run_dir / "latents"
        manifest = read_manifest(self.latents_dir)
        super().__init__(cfg, info, cfg.run_dir / "dit", dc.steps, resume, batch_size=dc.batch_size,
                         grad_accum=dc.grad_accum, section="dit")
        self.stats = LatentStats.load(self.latents_dir)
        self.dit, self.dit_info = build_dit(cfg, manifest)
        self.dit.to(info.device)
        self.ema = EMA(self.dit)
        self.model = wrap_model(self.dit, cfg, info, grad_checkpointing=cfg.model.grad_checkpointing)
        self.fsdp = cfg.train.fsdp and info.distributed
        if self.fsdp:
            self.ema = apply_fsdp(self.ema, forward_only=True)
        self.optimizer = build_optimizer(self.dit, dc.lr, dc.betas, dc.weight_decay)
        self._loader = loader
        self.global_micro = self.micro * info.world_size

    def modules(self) -> dict[str, nn.Module]:
        return {"dit": self.dit, "ema": self.ema}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"dit": self.optimizer}

    def make_loader(self) -> Loader:
        return self._loader or latent_loader(self.latents_dir, self.micro, self.info.rank, self.cfg.dit.label,
                                             flip=self.cfg.latents.flip,
                                             shuffle_buffer=self.cfg.data.shuffle_buffer)

    def describe(self) -> str:
        d = self.dit_info
        return (f", {self.cfg.dit.size} on {d['in_channels']}x{d['grid'][0]}x{d['grid'][1]} latents, "
                f"{d['num_classes']} classes ({d['label']})")

    def before_step(self) -> None:
        dc = self.cfg.dit
        floor = dc.lr if dc.min_lr is None else dc.min_lr
        set_lr(self.optimizer, lr_at(self.step, dc.steps, dc.lr, floor, dc.warmup_steps))

    def micro_step(self, batch: dict, micro: int, sync: bool) -> dict[str, torch.Tensor]:
        dc, dev, n = self.cfg.dit, self.info.device, self.micro
        z = self.stats.normalize(batch["latent"].to(dev, non_blocking=True).float())
        labels = batch["label"].to(dev)
        if z.shape[0] != n:
            raise ValueError(f"loader gave a batch of {z.shape[0]} latents; expected {n}")
        g = generator(self.cfg.seed, self.step, micro)
        rows = slice(self.info.rank * n, (self.info.rank + 1) * n)
        noise = torch.randn((self.global_micro, *z.shape[1:]), generator=g)[rows].to(dev)
        t = sample_timesteps(self.global_micro, g, dc.time_schedule, dc.lognorm_mu, dc.lognorm_sigma)[rows].to(dev)
        drop = (torch.rand(self.global_micro, generator=g) < self.dit.spec.class_dropout)[rows].to(dev)
        ctx = self.model.no_sync() if (not sync and isinstance(self.model, DDP)) else contextlib.nullcontext()
        with ctx:
            with autocast(dev, self.cfg.train.precision):
                v = self.model(interpolate(z, noise, t), t, labels, force_drop=drop)
            parts = flow_matching_loss(v, velocity_target(z, noise), cosine=dc.cosine_loss)
            (parts["loss"] / self.grad_accum).backward()
        return {k: v.detach() for k, v in parts.items()}

    def update(self) -> dict[str, float]:
        clip = self.cfg.dit.grad_clip or float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_([p for p in self.dit.parameters() if p.grad is not None], clip)
        self.optimizer.step()
        self.ema.update(self.dit, self.cfg.dit.ema)
        return {"grad_norm": float(grad_norm), "lr": self.optimizer.param_groups[0]["lr"]}

    def after_step(self) -> None:
        every = self.cfg.dit.snapshot_every
        if every and (self.step % every == 0 or self.step == self.total_steps):
            self._snapshot()

    def _snapshot(self) -> None:
        """The EMA weights at this step, kept (checkpoints/ema/step-N.safetensors) when older checkpoints are
        pruned: the points of the generation convergence curve. Inside checkpoints/, so a changed run sets them
        aside with its checkpoints. Collective under FSDP."""
        ema = get_model_state_dict(self.ema, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.info.is_main:
            path = self.ckpt_dir / SNAPSHOTS / f"step-{self.step:07d}.safetensors"
            path.parent.mkdir(parents=True, exist_ok=True)
            ema = {k.removeprefix("module."): v.contiguous() for k, v in ema.items()}
            write_bytes_atomic(path, save(ema, metadata={"weights": "ema", "step": str(self.step)}))
        vdist.barrier()

    def export(self, metrics: dict) -> None:
        full = StateDictOptions(full_state_dict=True, cpu_offload=True)
        ema = get_model_state_dict(self.ema, options=full)
        raw = get_model_state_dict(self.dit, options=full)
        if self.info.is_main:
            ema = {k.removeprefix("module."): v.contiguous() for k, v in ema.items()}
            write_bytes_atomic(self.out / "model.safetensors", save(ema, metadata={"weights": "ema"}))
            write_bytes_atomic(self.out / "raw.safetensors",
                               save({k: v.contiguous() for k, v in raw.items()}, metadata={"weights": "last"}))
            write_json_atomic(self.out / "config.json", self.dit_info | {"ema": self.cfg.dit.ema})
            shutil.copy(self.latents_dir / STATS, self.out / STATS)


def snapshot_steps(directory: Path) -> list[int]:
    """Steps with kept EMA snapshots (dit.snapshot_every), ascending."""
    found = (Path(directory) / "checkpoints" / SNAPSHOTS).glob("step-*.safetensors")
    return sorted(int(p.name[5:12]) for p in found)


def load_dit(directory: Path, weights: str = "ema", checkpoint: int | None = None,
             device: str | torch.device = "cpu") -> tuple[DiT, dict]:
    """A trained DiT from `directory`: its EMA (`model.safetensors`) or last (`raw.safetensors`) weights, or those
    of checkpoint step `checkpoint` (an EMA snapshot, or a checkpoint still kept: for convergence curves)."""
    from safetensors.torch import load_file

    from vtp.models.registry import DiTSpec

    directory = Path(directory)
    path = directory / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; train the DiT first (`vtp train-dit --config NAME`)")
    info = json.loads(path.read_text())
    if info.get("format") != FORMAT:
        raise ValueError(f"{path}: expected format {FORMAT!r}, got {info.get('format')!r}")
    model = DiT(DiTSpec(**info["spec"]), info["in_channels"], tuple(info["grid"]), info["num_classes"])
    if checkpoint is None:
        state = load_file(directory / ("model.safetensors" if weights == "ema" else "raw.safetensors"))
    elif weights == "ema" and (snap := directory / "checkpoints" / SNAPSHOTS / f"step-{checkpoint:07d}.safetensors"
                               ).is_file():
        state = load_file(snap)
    else:
        step = directory / "checkpoints" / f"step-{checkpoint:07d}"
        if not step.is_dir():
            found = sorted(p.name for p in (directory / "checkpoints").glob("step-*"))
            raise FileNotFoundError(f"{step}: no such checkpoint; found {', '.join(found) or 'none'}")
        state = load_file(step / ("ema.safetensors" if weights == "ema" else "dit.safetensors"))
        state = {k.removeprefix("module."): v for k, v in state.items()}
    model.load_state_dict(state)
    return model.to(device).eval(), info
