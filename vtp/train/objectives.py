"""The VTP stage-1 objective: CLIP, SSL (DINO + iBOT [+ KoLeo]) and reconstruction on subsets of one batch.

`L = w_clip * CLIP + w_ssl * (DINO + w_ibot * iBOT + w_koleo * KoLeo) + w_rec * L_rec [+ w_kl * KL]`

One optimizer step sees one global batch, however it is split into ranks and accumulation micro-batches:
- SSL and reconstruction subsets are random subsets of the step's global batch (paper 3.6), so a micro-batch of
  a rank may hold a few more or fewer of them than its neighbour. Each per-micro-batch mean is rescaled by
  `n_local * world * accum / n_global`, so the accumulated, DDP-averaged gradient equals the gradient of the global
  mean exactly; a micro-batch with no sample of a subset runs one sample at weight 0, so every backward touches
  the same parameters. The SSL teacher targets (Sinkhorn-Knopp, centres) are computed once over the step's
  whole SSL subset (`StepTargets`).
- CLIP runs on an equal share of every rank's micro-batch (open_clip's all-gather needs equal rows per rank;
  the share is all of it at the paper's 8:2:1 ratio). Under accumulation, its negatives are the step's whole
  batch: OpenCLIP's `accum_freq` recipe. A no-grad pass caches every micro-batch's embeddings; micro-batch m
  recomputes its own with gradients and scores them against the cache. Summed over m, the embedding gradients
  are those of the whole batch's loss. Unlike OpenCLIP, the logit scale carries gradient in one micro-batch
  only (the last, which DDP syncs), so its gradient is not multiplied by the number of micro-batches.
- KoLeo is defined on a rank's micro-batch (DINOv2: the per-GPU batch), so it depends on how the batch is split.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vtp.config import Config
from vtp.losses.clip import ClipLoss
from vtp.losses.dino import DINOLoss
from vtp.losses.ibot import IBOTLoss
from vtp.losses.koleo import KoLeoLoss
from vtp.losses.reconstruction import ReconstructionLoss
from vtp.models.tokenizer import Tokenizer
from vtp.train.runtime import part


@dataclass
class Subset:
    """Local rows of one objective's subset, and the factor turning their mean into a share of the global mean."""
    index: Tensor  # (n,) rows of the local micro-batch; one row at scale 0 when it holds none
    position: Tensor  # (n,) where those rows stand in the global subset (seeds their per-sample randomness)
    size: int  # samples in the global subset
    scale: float

    @classmethod
    def of(cls, local_rows: Tensor, position: Tensor, n_global: int, shares: int) -> "Subset":
        """`shares`: how many per-micro-batch means make up the step (world size x accumulation micro-batches)."""
        if local_rows.numel() == 0:
            zero = torch.zeros(1, dtype=torch.long, device=local_rows.device)
            return cls(zero, zero.cpu(), n_global, 0.0)
        return cls(local_rows, position, n_global, local_rows.numel() * shares / n_global)


@dataclass
class SSLTargets:
    """What the EMA teacher produced (no grad) for one micro-batch's SSL rows."""
    global_crops: Tensor  # (2n,3,G,G) ordered [view0 of all n, view1 of all n]
    local_crops: Tensor | None  # (n_local*n,3,L,L)
    masks: Tensor  # (2n, N) bool
    dino_probs: list[Tensor]  # 2 x (n,K)
    ibot_probs: Tensor  # (M,K) for the masked patches, row-major over masks


@dataclass
class ClipCache:
    """The step's CLIP embeddings of this rank, one (k, E) pair per micro-batch, computed without a graph."""
    images: list[Tensor]
    texts: list[Tensor]

    def with_own(self, micro: int, image: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        """The step's embeddings with micro-batch `micro`'s rows replaced by ones that carry gradients."""
        images, texts = list(self.images), list(self.texts)
        images[micro], texts[micro] = image, text
        return torch.cat(images), torch.cat(texts)


@dataclass
class MicroPlan:
    """What one micro-step's forward needs besides its images and captions."""
    micro: int
    accum: int
    clip_rows: int  # CLIP's share of the local micro-batch: its first clip_rows rows
    rec: Subset | None
    ssl: Subset | None
    targets: SSLTargets | None
    clip_cache: ClipCache | None  # set under accumulation


class VTPObjective(nn.Module):
    """Wrap in DDP as a whole: its forward runs all three passes, so one backward syncs every gradient."""

    def __init__(self, tok: Tokenizer, cfg: Config):
        super().__init__()
        self.tok, self.cfg = tok, cfg
        lc = cfg.loss
        prototypes = tok.spec.dino.prototypes if tok.spec.dino else 0
        self.clip_loss = ClipLoss() if lc.clip else None
        self.dino_loss = DINOLoss(prototypes, lc.dino.student_temp, lc.dino.centering,
                                  lc.dino.center_momentum) if lc.ssl else None
        self.ibot_loss = IBOTLoss(prototypes, lc.dino.student_temp, lc.dino.centering,
                                  lc.dino.center_momentum) if lc.ssl else None
        self.koleo_loss = KoLeoLoss() if lc.ssl and lc.dino.koleo_weight > 0 else None
        self.rec_loss = ReconstructionLoss.from_config(lc) if lc.rec else None

    def forward(self, images: Tensor, captions: list[str] | None, plan: MicroPlan | None = None,
                clip_only: bool = False) -> tuple[dict[str, Tensor], Tensor] | tuple[Tensor, Tensor]:
        """All three passes of one micro-batch: (detached-to-be terms, the loss to backpropagate). The logged
        `loss` is the objective's value; the backward loss also carries the CLIP term's accumulation factor.
        `clip_only`: just CLIP's (image, text) embeddings, for the no-grad cache pass."""
        lc, drop = self.cfg.loss, self.cfg.model.drop_path
        if clip_only:
            return self._clip_embeddings(images, captions, plan.clip_rows)
        parts: dict[str, Tensor] = {}
        total = images.new_zeros(())
        backward_extra = images.new_zeros(())
        if self.clip_loss is not None:
            img, txt = self._clip_embeddings(images, captions, plan.clip_rows)
            log_scale = self.tok.logit_scale
            if plan.clip_cache is not None:
                img, txt = plan.clip_cache.with_own(plan.micro, img, txt)
                if plan.micro != plan.accum - 1:
                    log_scale = log_scale.detach()
            with part("clip_loss"):
                parts["clip"] = self.clip_loss(img, txt, log_scale)
            total = total + lc.weight_clip * parts["clip"]
            if plan.clip_cache is not None:  # every micro-batch scores the whole step: undo the engine's 1/accum
                backward_extra = (plan.accum - 1) * lc.weight_clip * parts["clip"]
        if self.dino_loss is not None:
            ssl = plan.ssl
            with part("ssl_student"):  # the student's crops, the DINO/iBOT heads and their losses, KoLeo
                ssl_loss = self._ssl(plan.targets, drop.ssl, parts) * ssl.scale
            for k in ("dino", "ibot", "koleo"):
                if k in parts:
                    parts[k] = parts[k] * ssl.scale
            total = total + lc.weight_ssl * ssl_loss
        if self.rec_loss is not None:
            rec = plan.rec
            with part("reconstruction"):
                recon, kl = self.tok.reconstruct(images[rec.index], drop_rate=drop.rec)
            with part("reconstruction_loss"):  # L1 (+ MSE) + LPIPS
                out = self.rec_loss(recon, images[rec.index])
            for k in ("l1", "mse", "lpips"):
                parts[k] = out[k] * rec.scale
            rec_loss = out["loss"]
            if kl is not None:
                parts["kl"] = kl * rec.scale
                rec_loss = rec_loss + lc.kl_weight / max(lc.weight_rec, 1e-12) * kl
            total = total + lc.weight_rec * rec_loss * rec.scale
        parts["loss"] = total
        return parts, total + backward_extra

    def _clip_embeddings(self, images: Tensor, captions: list[str], rows: int) -> tuple[Tensor, Tensor]:
        with part("clip_image"):
            image = self.tok.clip_image(images[:rows], drop_rate=self.cfg.model.drop_path.clip)
        with part("clip_text"):
            return image, self.tok.encode_text(captions[:rows])

    def _ssl(self, t: SSLTargets, drop_rate: float, parts: dict[str, Tensor]) -> Tensor:
        dc, head = self.cfg.loss.dino, self.tok.dino_head
        n = t.global_crops.shape[0] // 2
        glob = self.tok.semantic(t.global_crops, masks=t.masks, drop_rate=drop_rate)
        student = list(head(glob["cls"]).chunk(2))
        if t.local_crops is not None:
            loc = self.tok.semantic(t.local_crops, drop_rate=drop_rate)
            student += list(head(loc["cls"]).chunk(t.local_crops.shape[0] // n))
        dino = self.dino_loss(student, t.dino_probs)
        sample_index = t.masks.nonzero()[:, 0]
        ibot = self.ibot_loss(head(glob["patches"][t.masks]), t.ibot_probs, sample_index, 2 * n)
        parts["dino"], parts["ibot"] = dino, ibot
        loss = dino + dc.ibot_weight * ibot
        if self.koleo_loss is not None:
            # KoLeo needs two samples; a rank's placeholder (or single) row contributes nothing.
            crops = [c for c in glob["cls"].chunk(2) if c.shape[0] > 1]
            parts["koleo"] = sum((self.koleo_loss(c) for c in crops), glob["cls"].new_zeros(()))
            loss = loss + dc.koleo_weight * parts["koleo"]
        return loss
