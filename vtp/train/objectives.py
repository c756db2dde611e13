"""The VTP stage-1 objective: CLIP, SSL (DINO + iBOT [+ KoLeo]) and reconstruction on subsets of one batch.

`L = w_clip * CLIP + w_ssl * (DINO + w_ibot * iBOT + w_koleo * KoLeo) + w_rec * (L1 + w_lpips * LPIPS) [+ w_kl * KL]`

Subsets are random subsets of the *global* batch (paper §3.6), so a rank may hold a few more or fewer of them
than its neighbour. Each per-rank mean is rescaled by `n_local * world / n_global` so that DDP's gradient average
equals the single-process gradient of the global mean exactly; a rank with no sample of a subset runs one
sample at weight 0 so every rank's autograd graph touches the same parameters.
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


@dataclass
class Subset:
    """Local rows of one objective's subset, and the factor turning their mean into a share of the global mean."""
    index: Tensor  # (n,) rows of the local batch; one row at scale 0 when the rank holds none
    position: Tensor  # (n,) where those rows stand in the global subset (seeds their per-sample randomness)
    size: int  # samples in the global subset
    scale: float

    @classmethod
    def of(cls, local_rows: Tensor, position: Tensor, n_global: int, world: int) -> "Subset":
        if local_rows.numel() == 0:
            zero = torch.zeros(1, dtype=torch.long, device=local_rows.device)
            return cls(zero, zero.cpu(), n_global, 0.0)
        return cls(local_rows, position, n_global, local_rows.numel() * world / n_global)


@dataclass
class SSLTargets:
    """What the EMA teacher produced (no grad) for the SSL subset's two global crops."""
    global_crops: Tensor  # (2n,3,G,G) ordered [view0 of all n, view1 of all n]
    local_crops: Tensor | None  # (n_local*n,3,L,L)
    masks: Tensor  # (2n, N) bool
    dino_probs: list[Tensor]  # 2 x (n,K)
    ibot_probs: Tensor  # (M,K) for the masked patches, row-major over masks


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
        self.rec_loss = ReconstructionLoss(lc.lpips_net, lc.lpips_weight, lc.lpips_weights) if lc.rec else None

    def forward(self, images: Tensor, captions: list[str] | None, rec: Subset | None, ssl: Subset | None,
                targets: SSLTargets | None) -> dict[str, Tensor]:
        lc, drop = self.cfg.loss, self.cfg.model.drop_path
        parts: dict[str, Tensor] = {}
        total = images.new_zeros(())
        if self.clip_loss is not None:
            img = self.tok.clip_image(images, drop_rate=drop.clip)
            txt = self.tok.encode_text(captions)
            parts["clip"] = self.clip_loss(img, txt, self.tok.logit_scale)
            total = total + lc.weight_clip * parts["clip"]
        if self.dino_loss is not None:
            ssl_loss = self._ssl(targets, drop.ssl, parts) * ssl.scale
            for k in ("dino", "ibot", "koleo"):
                if k in parts:
                    parts[k] = parts[k] * ssl.scale
            total = total + lc.weight_ssl * ssl_loss
        if self.rec_loss is not None:
            recon, kl = self.tok.reconstruct(images[rec.index], drop_rate=drop.rec)
            out = self.rec_loss(recon, images[rec.index])
            parts["l1"], parts["lpips"] = out["l1"] * rec.scale, out["lpips"] * rec.scale
            rec_loss = out["loss"]
            if kl is not None:
                parts["kl"] = kl * rec.scale
                rec_loss = rec_loss + lc.kl_weight / max(lc.weight_rec, 1e-12) * kl
            total = total + lc.weight_rec * rec_loss * rec.scale
        parts["loss"] = total
        return parts

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
