"""Build a fake vtp project on disk in the layout the stages write (no torch, no training): finished, partial,
running, failed and corrupt configurations, dvclive curves, grids, sample sets and a judge.

    build_project(tmp) -> tmp with params.yaml and runs/{vtp,ae,big,partial,running,failed,corrupt,judge}/
    write_config(runs, name, ...) -> one finished configuration (the benchmark writes 100 of them)
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["circle", "square", "triangle"]
TOKENIZER_TSVS = ("loss", "clip", "l1", "lr")


def _json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


def _png(path: Path, w: int, h: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def config_dict(name: str, objectives=("clip", "ssl", "rec"), size: str = "vtp-cpu-s", dim: int = 32,
                steps: int = 300, resolution: int = 32, lr: float = 1e-3) -> dict:
    return {"name": name, "seed": 0, "runs_root": "runs",
            "data": {"dataset": "synthetic", "root": "data/shards", "resolution": resolution},
            "model": {"size": size, "patch": None, "bottleneck_dim": dim},
            "loss": {k: k in objectives for k in ("clip", "ssl", "rec")},
            "train": {"steps": steps, "lr": lr, "batch_size": 64}, "dit": {"steps": 400, "size": "dit-cpu-s"}}


def _run_json(stage: str, config: dict, status: str = "ok", **extra) -> dict:
    return {"stage": stage, "status": status, "started": "2026-12-02T08:49:21+00:00",
            "ended": None if status == "running" else "2026-12-02T08:59:27+00:00", "seed": 0,
            "git": {"commit": "5d93346d1d22bd072fb6b5302f3432738c227bcd", "dirty": False}, "config": config,
            "packages": {"torch": "2.14.1", "vtp": "0.1.0"}, "python": "3.11.7", "host": "testhost",
            "device": {"type": "cpu", "threads": 2}, "world_size": 1, **extra}


def _curves(live: Path, names, steps: int, scale: float) -> None:
    for n in names:
        rows = "".join(f"{s}\t{scale * math.exp(-s / 200) + 0.01}\n" for s in range(10, steps + 1, 10))
        (live / "plots" / "metrics").mkdir(parents=True, exist_ok=True)
        (live / "plots" / "metrics" / f"{n}.tsv").write_text(f"step\t{n}\n{rows}")
    _json(live / "metrics.json", {n: scale * math.exp(-steps / 200) for n in names} | {"step": steps})


def write_tokenizer(cdir: Path, config: dict, flops: float, status: str = "ok", step: int | None = None, **extra):
    t, steps = cdir / "tokenizer", config["train"]["steps"]
    _curves(t / "dvclive", TOKENIZER_TSVS, step or steps, 1.0 + len(config["name"]) % 3)
    if status in ("failed", "interrupted"):
        extra["step"] = step  # the engine records where it stopped
    _json(t / "run.json", _run_json("pretrain", config, status, **extra))
    if status != "ok":
        return
    _json(t / "metrics.json", {"config": config["name"], "stage": "pretrain", "step": steps,
                               "model_flops_per_step": flops / steps, "model_total_flops": flops,
                               "total_flops": flops * 1.1, "loss": 0.3})
    _json(t / "config.json", {"format": "vtp-tokenizer", "version": 1,
                              "spec": {"name": config["model"]["size"], "patch": 8,
                                       "bottleneck_dim": config["model"]["bottleneck_dim"]}})
    (t / "model.safetensors").write_bytes(b"not real weights")


def write_eval(cdir: Path, config: dict, quality: float, params: int) -> None:
    e = cdir / "eval"
    summary = {"psnr": 15 + 5 * quality, "ssim": 0.2 + 0.3 * quality, "lpips_vgg": 0.6 - 0.3 * quality,
               "fd_effnetlite0": 250 - 100 * quality, "zeroshot_top1": 0.1 + 0.2 * quality,
               "probe_bottleneck_top1": 0.1 + 0.1 * quality}
    _json(e / "metrics.json", {"schema": "vtp.eval/1", "summary": summary, "config": config["name"],
                               "tokenizer": {"size": config["model"]["size"], "parameters": params}})
    _json(e / "summary.json", summary)
    _json(e / "run.json", _run_json("evaluate", config, metrics=summary))
    _png(e / "grids" / "reconstruction.png", 3 * 4 * 34 + 2, 4 * 34 + 2, seed=len(config["name"]))


def write_generation(cdir: Path, config: dict, judge: float) -> None:
    lat = cdir / "latents"
    _json(lat / "run.json", _run_json("latents", config))
    _json(lat / "stats.json", {"mean": [0.0], "std": [1.0]})
    _json(lat / "manifest.json", {"count": 100})
    d = cdir / "dit"
    _curves(d / "dvclive", ("loss", "mse"), 400, 2.0)
    _json(d / "run.json", _run_json("train-dit", config))
    _json(d / "metrics.json", {"config": config["name"], "stage": "train-dit", "step": 400})
    (d / "model.safetensors").write_bytes(b"x")
    s = cdir / "samples"
    sampler = {"solver": "euler", "steps": 50, "shift": 1.0, "cfg_scale": 1.0, "cfg_interval": None, "ema": True,
               "seed": 0}
    _json(s / "metrics.json", {"config": config["name"], "count": 30, "classes": CLASSES, "label": "shape",
                               "sampler": sampler, "nfe_per_batch": 50.0, "checkpoint": None, "weights": "ema",
                               "judge_accuracy": judge, "judge_chance": 1 / len(CLASSES)})
    _json(s / "run.json", _run_json("sample", config, sampler=sampler))
    for i, c in enumerate(CLASSES):
        _png(s / "grids" / f"class-{i:03d}-{c}.png", 40, 40, seed=i)
    _png(s / "grids" / "grid.png", 80, 80, seed=9)


def write_config(runs: Path, name: str, objectives=("clip", "ssl", "rec"), dim: int = 32, steps: int = 300,
                 flops: float = 1e12, quality: float = 0.5, params: int = 10_000_000, size: str = "vtp-cpu-s") -> Path:
    """One finished configuration: every stage ok, with metrics, curves, grids and samples."""
    cdir = runs / name
    config = config_dict(name, objectives, size, dim, steps)
    write_tokenizer(cdir, config, flops)
    write_eval(cdir, config, quality, params)
    write_generation(cdir, config, judge=0.2 + 0.5 * quality)
    return cdir


def build_project(root: Path) -> Path:
    runs = root / "runs"
    write_config(runs, "vtp", flops=8e12, quality=0.6)
    write_config(runs, "ae", objectives=("rec",), flops=8e12, quality=0.8, params=6_000_000)
    write_config(runs, "big", flops=3e13, dim=64, quality=0.9, params=40_000_000, size="vtp-cpu-m")
    partial = config_dict("partial")  # pretrained, nothing after
    write_tokenizer(runs / "partial", partial, 2e12)
    running = config_dict("running", steps=300)
    write_tokenizer(runs / "running", running, 0, status="running", step=120)
    failed = config_dict("failed")
    write_tokenizer(runs / "failed", failed, 0, status="failed", step=57,
                    error="NonFiniteLoss: non-finite clip loss at pretrain step 57")
    corrupt = runs / "corrupt" / "tokenizer"
    corrupt.mkdir(parents=True)
    (corrupt / "run.json").write_text('{"stage": "pretrain", "status": "ok", "conf')  # a truncated write
    _json(runs / "judge" / "run.json", _run_json("judge", {}))
    configs = {n: {} for n in ("ae", "vtp", "big", "partial", "running", "failed", "corrupt", "planned")}
    configs["ae"] = {"loss": {"clip": False, "ssl": False}}
    (root / "params.yaml").write_text(json.dumps({"seed": 0, "loss": {"clip": True, "ssl": True, "rec": True},
                                                  "model": {"size": "vtp-cpu-s"}, "configs": configs}))
    return root


def exp_show() -> list[dict]:
    """A `dvc exp show --json` answer (DVC 3's shape): the workspace, a baseline commit and two experiments."""
    def data(rev: str, lr: float, psnr: float | None) -> dict:
        metrics = {} if psnr is None else {"runs/vtp/eval/summary.json": {"data": {"psnr": psnr, "ssim": 0.3}}}
        return {"rev": rev, "timestamp": "2026-12-02T16:03:12", "meta": {},
                "params": {"params.yaml": {"data": {"seed": 0, "train": {"lr": lr, "steps": 300}}}},
                "metrics": metrics}

    sha = "628862f21226dc679bad5864eb977a5f84c7bac7"
    exps = [{"name": n, "executor": None, "revs": [{"rev": r * 40, "name": n, "data": data(r * 40, lr, p),
                                                     "error": None, "experiments": None}]}
            for n, r, lr, p in (("exp-lr2", "a", 2e-3, 19.5), ("exp-lr5", "b", 5e-3, 17.0))]
    return [{"rev": "workspace", "name": None, "data": data("workspace", 1e-3, 18.2), "error": None,
             "experiments": None},
            {"rev": sha, "name": "main", "data": data(sha, 1e-3, 18.2), "error": None, "experiments": exps}]


def project_env(root: Path) -> dict[str, str]:
    """The environment that points the explorer at a project built by `build_project(root)`."""
    return {"VTP_RUNS_ROOT": str(root / "runs"), "VTP_PROJECT_ROOT": str(root),
            "VTP_REPORTS_ROOT": str(root / "reports")}
