"""`vtp decoder-gan`: stage 2 on the shared engine. The encoder and bottleneck stay frozen (VTP §3.2: GAN
gradients destabilise the ViT encoder); the pixel decoder is fine-tuned with L1 + LPIPS + a hinge GAN whose
generator weight starts at `gan.start_step` and ramps up over `gan.adv_warmup_steps`; the discriminator has
its own AdamW settings; an EMA of the decoder (`gan.ema`) is what gets exported.

Reads runs/<cfg>/tokenizer (stage 1), writes runs/<cfg>/tokenizer-gan with the same layout.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.nn.parallel import DistributedDataParallel as DDP

from vtp import dist as vdist
from vtp.config import Config
from vtp.losses.gan import Discriminator, adversarial_weight, hinge_d_loss, hinge_g_loss
from vtp.losses.reconstruction import ReconstructionLoss
from vtp.models.ema import EMA
from vtp.models.tokenizer import Tokenizer
from vtp.train.data import Loader, webdataset_loader
from vtp.train.engine import Trainer, run_trainer
from vtp.train.optim import build_optimizer, lr_at, set_lr
from vtp.train.runtime import autocast, step_seed
from vtp.train.samples import save_reconstruction_grid, validation_images
from vtp.train.setup import apply_fsdp, wrap_model


class DecoderObjective(nn.Module):
    """Decoder + its reconstruction loss; DDP/FSDP wrap this so only decoder gradients are synchronised."""

    def __init__(self, decoder: nn.Module, cfg: Config):
        super().__init__()
        self.decoder = decoder
        self.rec_loss = ReconstructionLoss.from_config(cfg.loss)

    def forward(self, latents: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        recon = self.decoder(latents)
        return recon, self.rec_loss(recon, images)


def run_decoder_gan(cfg: Config, resume: bool = True, loader: Loader | None = None) -> dict:
    return run_trainer(DecoderGanTrainer, cfg, resume, loader)


class DecoderGanTrainer(Trainer):
    stage = "decoder-gan"
    data_seed_offset = 1  # not the batches stage 1 saw, in the same order

    def __init__(self, cfg: Config, info: vdist.DistInfo, resume: bool, loader: Loader | None = None):
        self.src = cfg.run_dir / "tokenizer"
        if not (self.src / "config.json").exists():
            raise FileNotFoundError(f"stage 2 needs the stage-1 tokenizer in {self.src}; run `vtp pretrain "
                                    f"--config {cfg.name}` first")
        super().__init__(cfg, info, cfg.run_dir / "tokenizer-gan", cfg.gan.steps, resume)
        gc, tc, dev = cfg.gan, cfg.train, info.device
        self.tok = Tokenizer.from_pretrained(self.src).to(dev).requires_grad_(False)
        self.tok.decoder.requires_grad_(True)
        self.objective = DecoderObjective(self.tok.decoder, cfg).to(dev)
        self.ema = EMA(self.tok.decoder) if gc.ema is not None else None
        self.disc = Discriminator(gc.disc_width, gc.disc_blocks).to(dev)
        self.model = wrap_model(self.objective, cfg, info)
        self.fsdp = tc.fsdp and info.distributed
        self.disc_model: nn.Module = self.disc
        if info.distributed:  # the discriminator is small: plain DDP, also next to an FSDP generator
            self.disc_model = DDP(self.disc, device_ids=[dev.index] if dev.type == "cuda" else None)
        if self.fsdp:
            self.sharded_root = self.objective
            if self.ema is not None:
                self.ema = apply_fsdp(self.ema, forward_only=True)
        self.opt_g = build_optimizer(self.objective, gc.lr, tc.betas, tc.weight_decay)
        self.opt_d = build_optimizer(self.disc, gc.disc_lr, gc.disc_betas, gc.disc_weight_decay)
        self._loader = loader
        self.grid_images = validation_images(cfg) if loader is None else next(loader(cfg.seed))["image"][:8]
        self.adv_weight = 0.0

    def loss_network_flops(self) -> float:
        return self.objective.rec_loss.lpips_flops(self.micro, self.cfg.data.resolution, self.info.device)

    def modules(self) -> dict[str, nn.Module]:
        return {"decoder": self.objective, "disc": self.disc} | ({"ema": self.ema} if self.ema is not None else {})

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"decoder": self.opt_g, "disc": self.opt_d}

    def make_loader(self) -> Loader:
        return self._loader or webdataset_loader(self.cfg, self.micro, self.info.rank, self.info.world_size)

    def describe(self) -> str:
        return f", decoder of {self.src}, EMA {self.cfg.gan.ema}"

    def before_step(self) -> None:
        gc = self.cfg.gan
        set_lr(self.opt_g, lr_at(self.step, gc.steps, gc.lr, gc.lr * 0.1, gc.warmup_steps))
        self.adv_weight = adversarial_weight(self.step, gc.start_step, gc.adv_warmup_steps, gc.weight)

    def micro_step(self, batch: dict, micro: int, sync: bool) -> dict[str, torch.Tensor]:
        tc, dev, w_adv = self.cfg.train, self.info.device, self.adv_weight
        images = batch["image"].to(dev, non_blocking=True)
        torch.manual_seed(step_seed(self.cfg.seed, self.step, micro, self.info.rank))
        with contextlib.ExitStack() as stack:
            for m in (self.model, self.disc_model):
                if not sync and isinstance(m, DDP):
                    stack.enter_context(m.no_sync())
            with torch.no_grad(), autocast(dev, tc.precision):
                latents = self.tok.encode(images)
            # The generator's adversarial term goes through the bare, frozen discriminator: it must neither
            # update nor DDP-synchronise the discriminator.
            self.disc.requires_grad_(False)
            with autocast(dev, tc.precision):
                recon, rec = self.model(latents, images)
                g_adv = hinge_g_loss(self.disc(recon)) if w_adv > 0 else recon.new_zeros(())
                loss_g = rec["loss"] + w_adv * g_adv
            (loss_g / tc.grad_accum).backward()
            self.disc.requires_grad_(True)
            with autocast(dev, tc.precision):  # real and fake in one forward: one DDP forward per backward
                real, fake = self.disc_model(torch.cat([images, recon.detach()])).chunk(2)
                d_loss = hinge_d_loss(real, fake)
            (d_loss / tc.grad_accum).backward()
        return {"l1": rec["l1"], "lpips": rec["lpips"], "g_adv": g_adv, "d_loss": d_loss, "loss": loss_g}

    def update(self) -> dict[str, float]:
        clip = self.cfg.train.grad_clip or float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(list(self.objective.decoder.parameters()), clip)
        self.opt_g.step()
        self.opt_d.step()
        if self.ema is not None:
            self.ema.update(self.objective.decoder, self.cfg.gan.ema)
        return {"adv_weight": self.adv_weight, "grad_norm": float(grad_norm), "lr": self.opt_g.param_groups[0]["lr"]}

    def save_images(self, step: int) -> list[tuple[str, Path]]:
        if not (self.info.is_main or self.fsdp):
            return []
        grid = save_reconstruction_grid(self.tok, self.grid_images, self.out, step, write=self.info.is_main)
        return [("reconstruction.png", grid)]

    def export(self, metrics: dict) -> None:
        """The stage-1 tokenizer with the (EMA) decoder's full weights (a collective under FSDP)."""
        source, prefix = (self.ema, "module.") if self.ema is not None else (self.objective, "decoder.")
        full = get_model_state_dict(source, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.info.is_main:
            tok = Tokenizer.from_pretrained(self.src)
            tok.decoder.load_state_dict({k.removeprefix(prefix): v for k, v in full.items() if k.startswith(prefix)})
            tok.save_pretrained(self.out)
            metrics["decoder_weights"] = "ema" if self.ema is not None else "last"
