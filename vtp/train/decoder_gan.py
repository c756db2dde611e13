"""`vtp pretrain --stage decoder-gan`: stage 2. The encoder and bottleneck stay frozen (VTP §3.2: GAN gradients
destabilise the ViT encoder); the pixel decoder is fine-tuned with L1 + LPIPS + a hinge GAN whose generator
weight starts at `gan.start_step` and ramps up over `gan.warmup_steps`.

Reads runs/<cfg>/tokenizer (stage 1), writes runs/<cfg>/tokenizer-gan with the same layout, resumable the same way.
"""
from __future__ import annotations

import json
import time

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from vtp import dist as vdist
from vtp.config import Config, to_dict
from vtp.log import log, progress
from vtp.losses.gan import Discriminator, adversarial_weight, hinge_d_loss, hinge_g_loss
from vtp.losses.reconstruction import ReconstructionLoss
from vtp.models.tokenizer import Tokenizer
from vtp.runinfo import RunRecord
from vtp.train import checkpoint as ckpt
from vtp.train.data import Loader, stream, webdataset_loader
from vtp.train.engine import (GracefulStop, Interrupted, Live, Meter, NonFiniteLoss, autocast, check_finite,
                              config_fingerprint, set_determinism, step_seed)
from vtp.train.optim import build_optimizer, lr_at, set_lr
from vtp.train.samples import save_reconstruction_grid, validation_images
from vtp.train.setup import local_micro_batch


class DecoderObjective(nn.Module):
    """Decoder + its reconstruction loss; DDP wraps this so only decoder gradients are synchronised."""

    def __init__(self, decoder: nn.Module, cfg: Config):
        super().__init__()
        self.decoder = decoder
        self.rec_loss = ReconstructionLoss(cfg.loss.lpips_net, cfg.loss.lpips_weight, cfg.loss.lpips_weights)

    def forward(self, latents: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        recon = self.decoder(latents)
        return recon, self.rec_loss(recon, images)


def run_decoder_gan(cfg: Config, resume: bool = True, loader: Loader | None = None) -> dict:
    info = vdist.init_distributed()
    try:
        return _train(cfg, info, resume, loader)
    finally:
        vdist.shutdown()


def _train(cfg: Config, info: vdist.DistInfo, resume: bool, loader: Loader | None) -> dict:
    gc, tc, dev = cfg.gan, cfg.train, info.device
    src, out = cfg.run_dir / "tokenizer", cfg.run_dir / "tokenizer-gan"
    if not (src / "config.json").exists():
        raise FileNotFoundError(f"stage 2 needs the stage-1 tokenizer in {src}; run `vtp pretrain --config "
                                f"{cfg.name}` first")
    set_determinism(tc.deterministic)
    torch.manual_seed(cfg.seed)
    micro = local_micro_batch(cfg, info.world_size)
    tok = Tokenizer.from_pretrained(src).to(dev)
    tok.requires_grad_(False)
    tok.decoder.requires_grad_(True)
    gen_obj = DecoderObjective(tok.decoder, cfg).to(dev)
    disc = Discriminator(gc.disc_width, gc.disc_blocks).to(dev)
    gen_model, disc_model = gen_obj, disc
    if info.distributed:
        ids = [dev.index] if dev.type == "cuda" else None
        gen_model, disc_model = DDP(gen_obj, device_ids=ids), DDP(disc, device_ids=ids)
    opt_g = build_optimizer(gen_obj, tc, lr=gc.lr)
    opt_d = build_optimizer(disc, tc, lr=gc.disc_lr)
    modules, optims = {"decoder": gen_obj, "disc": disc}, {"decoder": opt_g, "disc": opt_d}
    fingerprint = config_fingerprint(cfg) + ":gan"
    step = 0
    if resume and (path := ckpt.latest(out / "checkpoints")) is not None:
        if json.loads((path / "state.json").read_text()).get("fingerprint") == fingerprint:
            step = ckpt.load(path, modules, optims)["step"]
            log.info("resumed stage 2 from %s", path)
    grid_images = validation_images(cfg) if loader is None else next(loader(cfg.seed))["image"][:8]
    loader = loader or webdataset_loader(cfg, micro, info.rank, info.world_size)
    batches = stream(loader, cfg.seed + 1, step * tc.grad_accum)
    record = RunRecord(out, "decoder-gan", to_dict(cfg), cfg.seed, source=str(src)) if info.is_main else None
    live = Live(out / "dvclive", resume=step > 0, enabled=info.is_main)
    meter, last, t0 = Meter(), {}, time.perf_counter()
    with GracefulStop() as stop:
        for _ in progress(range(step, gc.steps), total=gc.steps, initial=step, desc=f"decoder-gan {cfg.name}"):
            lr_g = lr_at(step, gc.steps, gc.lr, gc.lr * 0.1, min(gc.warmup_steps, gc.steps - 1))
            set_lr(opt_g, lr_g)
            w_adv = adversarial_weight(step, gc.start_step, gc.warmup_steps, gc.weight)
            opt_g.zero_grad(set_to_none=True)
            opt_d.zero_grad(set_to_none=True)
            totals: dict[str, torch.Tensor] = {}
            for m in range(tc.grad_accum):
                images = next(batches)["image"].to(dev)
                torch.manual_seed(step_seed(cfg.seed, step, m, info.rank))
                with torch.no_grad(), autocast(dev, tc.precision):
                    latents = tok.encode(images)
                # The generator's adversarial term goes through the bare, frozen discriminator: it must neither
                # update nor DDP-synchronise the discriminator.
                disc.requires_grad_(False)
                with autocast(dev, tc.precision):
                    recon, rec = gen_model(latents, images)
                    g_adv = hinge_g_loss(disc(recon)) if w_adv > 0 else recon.new_zeros(())
                    loss_g = rec["loss"] + w_adv * g_adv
                (loss_g / tc.grad_accum).backward()
                disc.requires_grad_(True)
                with autocast(dev, tc.precision):
                    d_loss = hinge_d_loss(disc_model(images), disc_model(recon.detach()))
                (d_loss / tc.grad_accum).backward()
                for k, v in {"l1": rec["l1"], "lpips": rec["lpips"], "g_adv": g_adv, "d_loss": d_loss,
                             "loss": loss_g}.items():
                    totals[k] = totals.get(k, 0.0) + v.detach().float() / tc.grad_accum
            if (bad := check_finite(totals, step, dev)) is not None:
                raise NonFiniteLoss(f"non-finite {bad} loss at stage-2 step {step}; last good checkpoint kept")
            torch.nn.utils.clip_grad_norm_(gen_obj.decoder.parameters(), tc.grad_clip or float("inf"))
            opt_g.step()
            opt_d.step()
            step += 1
            names = sorted(totals)  # one collective for every logged term
            means = vdist.all_reduce_mean(torch.stack([totals[k] for k in names])).tolist()
            meter.add(dict(zip(names, means)) | {"adv_weight": w_adv}, tc.batch_size)
            if step % tc.log_every == 0 or step == gc.steps:
                means, ips, _ = meter.flush()
                last = {**means, "images_per_s": ips}
                live.log(step, last)
            if step % tc.image_every == 0 and info.is_main:
                live.log_image("reconstruction.png", save_reconstruction_grid(tok, grid_images, out, step))
            if step % tc.checkpoint_every == 0 or step == gc.steps or stop.requested(dev):
                ckpt.save(out / "checkpoints", step, modules, optims, {"fingerprint": fingerprint},
                          tc.keep_checkpoints)
                if stop.signal is not None:
                    raise Interrupted(f"stage 2 stopped by signal at step {step}; re-run to resume")
    metrics = {"config": cfg.name, "stage": "decoder-gan", "step": step, "wall_s": time.perf_counter() - t0, **last}
    if info.is_main:
        tok.save_pretrained(out)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        record.finish(metrics=metrics)
    live.close()
    return metrics
