"""Linear probe: multinomial logistic regression on frozen features, with a held-out learning-rate choice.

Protocol: standardise features with the statistics of the data the probe is fitted on; split the train
features into fit / held-out parts (a fixed seeded permutation); for each learning rate train on the fit part
and score the held-out part; refit on all train features with the best rate and report on the val features.
Training is minibatch AdamW from a zero initialisation with a seeded shuffle, so results are deterministic.
Written here rather than taken from sklearn so it runs on the GPU beside the tokenizer and needs no extra dep.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vtp.eval.zeroshot import chance, topk_correct


@dataclass(frozen=True)
class ProbeSettings:
    lrs: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
    epochs: int = 30
    batch_size: int = 256
    weight_decay: float = 1e-4
    holdout_fraction: float = 0.2
    seed: int = 0


def _standardise(fit: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean, std = fit.mean(0), fit.std(0, unbiased=False).clamp_min(1e-6)
    return [(x - mean) / std for x in (fit, *others)]


def train_logreg(x: torch.Tensor, y: torch.Tensor, num_classes: int, lr: float, s: ProbeSettings) -> torch.nn.Linear:
    gen = torch.Generator().manual_seed(s.seed)
    head = torch.nn.Linear(x.shape[1], num_classes).to(x.device)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=s.weight_decay)
    steps_per_epoch = -(-len(x) // s.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=s.epochs * steps_per_epoch)
    with torch.enable_grad():
        for _ in range(s.epochs):
            order = torch.randperm(len(x), generator=gen).to(x.device)
            for idx in order.split(s.batch_size):
                loss = F.cross_entropy(head(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    return head


@torch.no_grad()
def _accuracy(head: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    hits = topk_correct(head(x), y, (1, 5))
    return {"top1": hits[1].float().mean().item(), "top5": hits[5].float().mean().item()}


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                 num_classes: int, settings: ProbeSettings = ProbeSettings()) -> dict:
    """Select the learning rate on a held-out part of train, refit on all of train, report top-1/top-5 on val."""
    if train_x.dim() != 2 or val_x.dim() != 2 or train_x.shape[1] != val_x.shape[1]:
        raise ValueError(f"linear_probe: expected (N, D) train and val features of equal D, got "
                         f"{tuple(train_x.shape)} and {tuple(val_x.shape)}")
    if len(train_x) != len(train_y) or len(val_x) != len(val_y):
        raise ValueError(f"linear_probe: {len(train_x)}/{len(val_x)} feature rows but {len(train_y)}/{len(val_y)} "
                         f"labels")
    n_hold = int(round(len(train_x) * settings.holdout_fraction))
    if not 0 < n_hold < len(train_x):
        raise ValueError(f"linear_probe: holdout_fraction {settings.holdout_fraction} of {len(train_x)} train rows "
                         f"leaves an empty part")
    train_x, val_x = train_x.float(), val_x.float()
    perm = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(settings.seed)).to(train_x.device)
    hold, fit = perm[:n_hold], perm[n_hold:]
    fit_x, hold_x = _standardise(train_x[fit], train_x[hold])
    holdout = {lr: _accuracy(train_logreg(fit_x, train_y[fit], num_classes, lr, settings), hold_x,
                             train_y[hold])["top1"] for lr in settings.lrs}
    best_lr = max(settings.lrs, key=lambda lr: (holdout[lr], -lr))  # ties go to the smaller rate
    all_x, v_x = _standardise(train_x, val_x)
    head = train_logreg(all_x, train_y, num_classes, best_lr, settings)
    return {**_accuracy(head, v_x, val_y), "best_lr": best_lr, "holdout_top1": {str(k): v for k, v in holdout.items()},
            "n_train": len(train_x), "n_holdout": n_hold, "n_val": len(val_x), "dim": train_x.shape[1],
            "num_classes": num_classes, "chance_top1": chance(num_classes, 1), "chance_top5": chance(num_classes, 5)}
