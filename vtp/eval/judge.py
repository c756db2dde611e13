"""An independent judge of class-conditional samples: a small CNN trained on the *real* training images (never
on samples) to tell the conditioning label, scored on the real validation split. `judge_accuracy` is then the
share of generated images the judge assigns to the class they were asked for; chance is 1 / classes.

A CNN rather than a linear probe on a tokenizer's features: the judge must not share a feature space with any
tokenizer it helps compare.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from torch import nn

from vtp.fileio import write_bytes_atomic, write_json_atomic


class JudgeNet(nn.Module):
    def __init__(self, classes: int, width: int = 64):
        super().__init__()
        layers, c = [], 3
        for w in (width, 2 * width, 4 * width):
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images).mean(dim=(2, 3)))


def _load_split(cfg, split: str, label: str, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    from vtp.data.loader import eval_loader

    images, labels = [], []
    for batch in eval_loader(cfg, split, batch_size=256, num_samples=limit):
        images.append(batch["image"])
        labels.append(batch["labels"][label])
    return torch.cat(images), torch.cat(labels)


@torch.no_grad()
def predict(net: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    net.eval()
    device = next(net.parameters()).device
    return torch.cat([net(images[i:i + batch_size].to(device).float()).argmax(1).cpu()
                      for i in range(0, len(images), batch_size)])


def train_judge(cfg, out_dir: Path) -> dict:
    """Train on the train split's `cfg.judge.label`, keep the weights and the real-validation accuracy."""
    from vtp.data.loader import read_manifest
    from vtp.log import log, progress
    from vtp.train.runtime import generator

    jc, label = cfg.judge, cfg.judge.label
    names = read_manifest(cfg)["label_sets"][label]
    x, y = _load_split(cfg, "train", label, jc.train_samples)
    xv, yv = _load_split(cfg, "val", label, jc.val_samples)
    torch.manual_seed(cfg.seed)
    net = JudgeNet(len(names), jc.width)
    opt = torch.optim.AdamW(net.parameters(), lr=jc.lr, weight_decay=1e-4)
    steps_per_epoch = max(1, len(x) // jc.batch_size)
    # One-cycle (warm-up, then anneal): at constant LR the BatchNorm CNN sits at chance for epochs; with it a width-16
    # judge reaches 0.99 shape accuracy in 8 epochs (measured: constant LR at width 32 was 0.10 after 2 epochs).
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, jc.lr, total_steps=jc.epochs * steps_per_epoch,
                                                   pct_start=0.2)
    for epoch in progress(range(jc.epochs), desc="judge"):
        order = torch.randperm(len(x), generator=generator(cfg.seed, epoch))
        net.train()
        for i in range(steps_per_epoch):
            rows = order[i * jc.batch_size:(i + 1) * jc.batch_size]
            images = x[rows]
            flip = torch.rand(len(rows), generator=generator(cfg.seed, epoch, i)) < 0.5
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
            loss = F.cross_entropy(net(images), y[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
    accuracy = float((predict(net, xv) == yv).float().mean())
    doc = {"label": label, "classes": names, "chance": 1.0 / len(names), "val_accuracy": accuracy,
           "train_samples": len(x), "val_samples": len(xv), "epochs": jc.epochs,
           "judge": "JudgeNet CNN on real train images (vtp.eval.judge)"}
    out_dir = Path(out_dir)
    write_bytes_atomic(out_dir / "model.safetensors", save({k: v.contiguous() for k, v in net.state_dict().items()}))
    write_json_atomic(out_dir / "metrics.json", doc | {"width": jc.width})
    log.info("judge (%s): real val accuracy %.3f against chance %.3f", label, accuracy, 1.0 / len(names))
    return doc


def run_judge(cfg) -> dict:
    from vtp.config import to_dict
    from vtp.runinfo import RunRecord

    out = Path(cfg.runs_root) / "judge"
    record = RunRecord(out, "judge", to_dict(cfg), cfg.seed)
    doc = train_judge(cfg, out)
    record.finish(metrics={"val_accuracy": doc["val_accuracy"]})
    return doc


def load_judge(directory: Path) -> tuple[JudgeNet, dict]:
    directory = Path(directory)
    if not (directory / "metrics.json").is_file():
        raise FileNotFoundError(f"{directory}: no judge; run `vtp judge` first")
    doc = json.loads((directory / "metrics.json").read_text())
    net = JudgeNet(len(doc["classes"]), doc["width"])
    net.load_state_dict(load_file(directory / "model.safetensors"))
    return net.eval(), doc
