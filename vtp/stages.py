"""The stage registry: every stage of the pipeline, under one name everywhere.

A stage's name is its `vtp` subcommand, its DVC stage (`name@<cfg>` when it runs per configuration) and its
Prefect task. Each entry says which configuration sections it reads (its DVC `params:` and, for a training
stage, what its checkpoint fingerprint hashes), the code it runs (its DVC `deps:`; a test holds both to
`dvc.yaml` and to the entry module's import closure), and its inputs and outputs.

Torch-free, so the CLI and the orchestration layers can read it instantly.
"""
from __future__ import annotations

import hashlib
import importlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from vtp.config import Config

# Fields that change how a run is carried out or observed, not the weights it computes: changing one keeps a
# checkpoint resumable. (FSDP vs DDP and activation checkpointing change the arithmetic only within float
# tolerance; loader workers and the data root change where and how fast bytes arrive, not which.)
OPERATIONAL = frozenset({
    "name", "runs_root", "data.root", "data.loader_workers",
    "model.grad_checkpointing",
    "train.checkpoint_every", "train.keep_checkpoints", "train.log_every", "train.image_every", "train.nan_policy",
    "train.peak_tflops", "train.compile", "train.fsdp",
})

_TRAINING = ("seed", "data", "aug", "model", "loss", "train")


@dataclass(frozen=True)
class Stage:
    name: str
    summary: str
    entry: str  # "module:function" taking (cfg, **options)
    reads: tuple[str, ...]  # configuration sections (`dit`), or single fields of one (`eval.feature_space`)
    deps: tuple[str, ...]  # code paths (repository-relative) whose change re-runs the stage
    inputs: tuple[str, ...]  # path templates: {shards} = data/shards/<dataset>, {run} = runs/<cfg>
    outputs: tuple[str, ...]
    per_config: bool = True  # runs once per named configuration (DVC `foreach`)
    final: bool = False  # runs once, after every configuration's chain (it reads them all)

    def function(self) -> Callable[..., Any]:
        module, _, attr = self.entry.partition(":")
        return getattr(importlib.import_module(module), attr)

    def fingerprint(self, cfg: "Config") -> str:
        """Hash of the sections this stage reads, operational fields left out: a checkpoint resumes only a run
        with the same fingerprint, and an unrelated section (a DiT setting, an eval option) never changes it."""
        data = cfg.model_dump(mode="json")
        relevant = {key: _at(data, key) for key in self.reads}
        for path in OPERATIONAL:
            head, _, field = path.partition(".")
            if field and isinstance(relevant.get(head), dict):
                relevant[head].pop(field, None)
            elif not field:
                relevant.pop(head, None)
        blob = json.dumps({"stage": self.name, "config": relevant}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def paths(self, cfg: "Config") -> dict[str, list[str]]:
        fill = {"shards": str(cfg.shard_dir), "run": str(cfg.run_dir)}
        return {"inputs": [p.format(**fill) for p in self.inputs], "outputs": [p.format(**fill) for p in self.outputs]}


def _at(data: dict, key: str) -> Any:
    """A top-level section (`eval`) or one field of it (`eval.feature_space`): a stage may read just that."""
    head, _, field = key.partition(".")
    return data[head][field] if field else data[head]


_CORE = ("vtp/__init__.py", "vtp/config", "vtp/dist.py", "vtp/fileio.py", "vtp/log.py", "vtp/runinfo.py",
         "vtp/stages.py")

STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("ingest", "images (+ captions, labels) -> WebDataset shards + manifest.json", "vtp.data.ingest:ingest",
          reads=("seed", "data"), deps=(*_CORE, "vtp/data", "vtp/models/__init__.py", "vtp/models/registry.py"),
          inputs=(), outputs=("{shards}",), per_config=False),
    Stage("pretrain", "stage 1: the tokenizer with CLIP + SSL + reconstruction", "vtp.train.pretrain:run_pretrain",
          reads=_TRAINING, deps=(*_CORE, "vtp/data", "vtp/models", "vtp/losses", "vtp/train", "vtp/weights.py"),
          inputs=("{shards}",), outputs=("{run}/tokenizer",)),
    Stage("decoder-gan", "stage 2: the pixel decoder fine-tuned with a GAN, encoder frozen",
          "vtp.train.decoder_gan:run_decoder_gan", reads=(*_TRAINING, "gan"),
          deps=(*_CORE, "vtp/data", "vtp/models", "vtp/losses", "vtp/train", "vtp/weights.py"),
          inputs=("{shards}", "{run}/tokenizer"), outputs=("{run}/tokenizer-gan",)),
    Stage("latents", "the training split encoded (and flipped) into latent shards + channel statistics",
          "vtp.data.encode_latents:run_latents", reads=(*_TRAINING, "latents"),
          deps=(*_CORE, "vtp/data", "vtp/models", "vtp/losses", "vtp/train/__init__.py", "vtp/train/compute.py",
                "vtp/train/runtime.py", "vtp/weights.py"),
          inputs=("{shards}", "{run}/tokenizer"), outputs=("{run}/latents",)),
    Stage("train-dit", "a class-conditional DiT trained by flow matching on the latents",
          "vtp.train.dit:run_train_dit", reads=(*_TRAINING, "latents", "dit"),
          deps=(*_CORE, "vtp/data", "vtp/diffusion", "vtp/models", "vtp/losses", "vtp/train", "vtp/weights.py"),
          inputs=("{run}/latents",), outputs=("{run}/dit",)),
    Stage("judge", "an independent classifier of the conditioning label, trained on real images only",
          "vtp.eval.judge:run_judge", reads=("seed", "data", "judge"),
          deps=(*_CORE, "vtp/data", "vtp/models/__init__.py", "vtp/models/registry.py", "vtp/eval/__init__.py",
                "vtp/eval/judge.py", "vtp/train/__init__.py", "vtp/train/runtime.py"),
          inputs=("{shards}",), outputs=("runs/judge",), per_config=False),
    Stage("sample", "class-conditional samples from the DiT, decoded by the tokenizer, judged",
          "vtp.diffusion.generate:run_sample", reads=(*_TRAINING, "latents", "dit", "sample"),
          deps=(*_CORE, "vtp/data", "vtp/diffusion", "vtp/eval/__init__.py", "vtp/eval/judge.py", "vtp/models",
                "vtp/losses", "vtp/train", "vtp/weights.py"),
          inputs=("{run}/dit", "{run}/tokenizer", "runs/judge"), outputs=("{run}/samples",)),
    Stage("evaluate-generation", "generation metrics of the samples against val (FD, KID, precision/recall, IS "
          "analogue) and the FD convergence curve over DiT snapshots", "vtp.eval.generation:run_evaluate_generation",
          reads=(*_TRAINING, "latents", "dit", "sample", "gen_eval", "eval.feature_space", "eval.inception_weights"),
          deps=(*_CORE, "vtp/data", "vtp/diffusion", "vtp/eval/__init__.py", "vtp/eval/effnet_extractor.py",
                "vtp/eval/fidelity.py", "vtp/eval/generation.py", "vtp/eval/image_sets.py", "vtp/eval/judge.py",
                "vtp/eval/report.py", "vtp/models", "vtp/losses", "vtp/train", "vtp/weights.py"),
          inputs=("{shards}", "{run}/samples", "{run}/dit", "{run}/tokenizer"), outputs=("{run}/generation",)),
    Stage("evaluate", "reconstruction and understanding metrics of a tokenizer", "vtp.eval.evaluate:run_evaluate",
          reads=("seed", "data", "eval"),
          deps=(*_CORE, "vtp/data", "vtp/models", "vtp/losses", "vtp/eval", "vtp/weights.py"),
          inputs=("{shards}", "{run}/tokenizer"), outputs=("{run}/eval",)),
    Stage("report", "every configuration's table, power-law fits with bootstrap intervals, plots, the papers' "
          "claims checked", "vtp.report.build:run_report", reads=(),
          deps=(*_CORE, "vtp/models/__init__.py", "vtp/models/registry.py", "vtp/report"),
          inputs=("{run}/tokenizer", "{run}/eval", "{run}/generation"), outputs=("reports",), per_config=False,
          final=True),
)}


def get_stage(name: str) -> Stage:
    try:
        return STAGES[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}") from None
