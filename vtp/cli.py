"""The `vtp` command line: one subcommand per stage, each a thin shell over a library function.

Exit codes: 0 success, 2 bad usage or configuration (nothing written), 1 failure at run time.
Heavy imports (torch, ...) happen inside commands so `--help` and config errors answer instantly.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from vtp.config import Config, ConfigError, config_names, load_config, to_dict
from vtp.study_cli import study_app

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Pre-train visual tokenizers for generation and study how they scale.")
config_app = typer.Typer(no_args_is_help=True, help="Inspect the configurations in params.yaml.")
app.add_typer(config_app, name="config")
app.add_typer(study_app, name="study")

ConfigOpt = Annotated[Optional[str], typer.Option("--config", "-c", help="Named configuration in params.yaml "
                                                  "(`configs:`); default: the base.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override, e.g. train.steps=100 "
                                                     "(repeatable; value parsed as YAML).")]
ParamsOpt = Annotated[Path, typer.Option("--params", help="Parameters file.")]


class UsageError(Exception):
    """Bad usage found by a command before doing work (exit 2)."""


def stage(fn: Callable) -> Callable:
    """Map errors to exit codes: ConfigError/UsageError -> 2 (one line), anything else -> 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from vtp.log import setup_logging

        setup_logging(os.environ.get("VTP_LOG_LEVEL", "INFO"))
        try:
            return fn(*args, **kwargs)
        except (ConfigError, UsageError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None
        except BrokenPipeError:  # e.g. `vtp models | head`: the reader left; nothing went wrong
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except typer.Exit:
            raise
        except Exception as e:  # noqa: BLE001 - the CLI boundary: report, exit 1
            if os.environ.get("VTP_DEBUG"):
                traceback.print_exc()
            typer.echo(f"error: {type(e).__name__}: {e}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def resolve(config: str | None, overrides: list[str] | None, params: Path) -> Config:
    return load_config(config, overrides or [], params)


@config_app.command("show")
@stage
def config_show(name: Annotated[str, typer.Argument(help="Configuration name, or 'base'.")] = "base",
                set_: SetOpt = None, params: ParamsOpt = Path("params.yaml"),
                as_json: Annotated[bool, typer.Option("--json")] = False):
    """Print the fully resolved configuration NAME."""
    import yaml

    cfg = resolve(name, set_, params)
    data = to_dict(cfg)
    typer.echo(json.dumps(data, indent=2) if as_json else yaml.safe_dump(data, sort_keys=False).rstrip())


@config_app.command("list")
@stage
def config_list(params: ParamsOpt = Path("params.yaml")):
    """List the named configurations with their estimated training FLOPs and GPU-hours (vtp.config.study)."""
    from vtp.config.study import estimate, params_hardware
    from vtp.study_cli import hardware_line, table

    typer.echo(f"estimated from model FLOPs on {hardware_line(params_hardware(params))}")
    typer.echo("\n".join(table(estimate(params))))


@app.command()
@stage
def models(as_json: Annotated[bool, typer.Option("--json")] = False):
    """List the registered model sizes."""
    from dataclasses import asdict

    from vtp.models.registry import DIT_SIZES, SIZES

    if as_json:
        typer.echo(json.dumps({k: asdict(v) for k, v in {**SIZES, **DIT_SIZES}.items()}, indent=2))
        return
    typer.echo(f"{'name':22s} {'encoder (w/d/h)':16s} {'decoder (w/d/h)':16s} {'patch':>5s} {'d':>4s}  extras")
    for name, s in SIZES.items():
        e, d = s.encoder, s.decoder
        extras = ",".join(x for x, on in (("kl", s.variational), ("text", s.text), ("dino", s.dino)) if on)
        typer.echo(f"{name:22s} {f'{e.width}/{e.depth}/{e.heads}':16s} {f'{d.width}/{d.depth}/{d.heads}':16s} "
                   f"{s.patch:5d} {s.bottleneck_dim:4d}  {extras}")
    typer.echo(f"\n{'DiT':22s} {'width/depth/heads':16s} {'patch':>5s}")
    for name, s in DIT_SIZES.items():
        typer.echo(f"{name:22s} {f'{s.width}/{s.depth}/{s.heads}':16s} {s.patch:5d}")


@app.command()
@stage
def flops(name: Annotated[str, typer.Argument(help="Registered size name (see `vtp models`).")],
          resolution: Annotated[int, typer.Option(help="Image side in pixels (tokenizers).")] = 256,
          latent: Annotated[str, typer.Option(help="Latent C,H,W a DiT runs on (DiT sizes; VTP-L d64 at 256 px: "
                                              "64,16,16).")] = "64,16,16",
          classes: Annotated[int, typer.Option(help="Classes a DiT is conditioned on.")] = 1000,
          as_json: Annotated[bool, typer.Option("--json")] = False):
    """Measure parameters, MACs and FLOPs (= 2 x MACs, attention included) per image of each component."""
    from vtp.models.registry import DIT_SIZES, get_spec

    if name in DIT_SIZES:
        try:
            c, h, w = (int(v) for v in latent.split(","))
        except ValueError:
            raise UsageError(f"--latent {latent!r}: expected C,H,W, e.g. 64,16,16") from None
        patch = DIT_SIZES[name].patch
        if h % patch or w % patch:
            raise UsageError(f"--latent {latent}: the grid must be a multiple of {name}'s patch {patch}")
        from vtp.models.flops import measure_dit

        report = measure_dit(DIT_SIZES[name], c, (h, w), classes)
        where = f"on a {c}x{h}x{w} latent"
    else:
        try:
            spec = get_spec(name)
        except KeyError as e:
            raise UsageError(f"{e.args[0]}; DiT sizes: {', '.join(DIT_SIZES)}") from None
        if resolution % spec.patch:
            raise UsageError(f"--resolution {resolution}: must be a multiple of the patch size {spec.patch}")
        from vtp.models.flops import measure

        report = measure(spec, resolution)
        where = f"@ {resolution}px"
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"{report['name']} {where} ({report['convention']})")
    for comp, r in {**report["components"], "total": report["total"]}.items():
        typer.echo(f"  {comp:12s} params {r['params'] / 1e6:9.2f}M  MACs {r['macs'] / 1e9:9.3f}G  "
                   f"FLOPs {r['flops'] / 1e9:9.3f}G")


@app.command()
@stage
def ingest(source: Annotated[str, typer.Option(help="synthetic | folder | pairs | shards")] = "synthetic",
           path: Annotated[Optional[Path], typer.Option(help="Input: image folder, pairs file "
                                                        "(JSONL/CSV/Parquet) or shard folder.")] = None,
           out: Annotated[Optional[Path], typer.Option(help="Output root (default: data.root).")] = None,
           name: Annotated[Optional[str], typer.Option(help="Dataset name (default: data.dataset).")] = None,
           resolution: Annotated[Optional[int], typer.Option(help="Side in px (default: data.resolution).")] = None,
           workers: Annotated[int, typer.Option(help="Parallel worker processes.")] = 2,
           strict: Annotated[bool, typer.Option(help="Exit 1 if any input was skipped.")] = False,
           config: ConfigOpt = None, set_: SetOpt = None, params: ParamsOpt = Path("params.yaml")):
    """Ingest images (and captions, labels) into WebDataset shards + manifest.json."""
    cfg = resolve(config, set_, params)
    from vtp.data.ingest import SOURCES
    from vtp.data.ingest import ingest as run_ingest

    if source not in SOURCES:
        raise UsageError(f"--source {source!r}: allowed: {', '.join(SOURCES)}")
    if source != "synthetic" and path is None:
        raise UsageError(f"--source {source} needs --path")
    if path is not None and not path.exists():
        raise UsageError(f"--path {path}: does not exist")
    manifest = run_ingest(source=source, path=path, out=out or Path(cfg.data.root), name=name or cfg.data.dataset,
                          resolution=resolution or cfg.data.resolution, workers=workers, strict=strict, cfg=cfg)
    if strict and manifest["skipped_count"]:
        raise SystemExit(1)


FreshOpt = Annotated[bool, typer.Option(help="Set existing checkpoints aside and start over (default: resume).")]


@app.command()
@stage
def pretrain(config: ConfigOpt = None, set_: SetOpt = None, params: ParamsOpt = Path("params.yaml"),
             fresh: FreshOpt = False):
    """Pre-train the tokenizer (stage 1: CLIP + SSL + reconstruction). Resumes by default."""
    cfg = resolve(config, set_, params)
    from vtp.train.pretrain import run_pretrain

    run_pretrain(cfg, resume=not fresh)


@app.command("decoder-gan")
@stage
def decoder_gan(config: ConfigOpt = None, set_: SetOpt = None, params: ParamsOpt = Path("params.yaml"),
                fresh: FreshOpt = False):
    """Fine-tune the pixel decoder with a GAN, encoder frozen (stage 2). Resumes by default."""
    cfg = resolve(config, set_, params)
    from vtp.train.decoder_gan import run_decoder_gan

    run_decoder_gan(cfg, resume=not fresh)


@app.command()
@stage
def stages(as_json: Annotated[bool, typer.Option("--json")] = False):
    """List the pipeline's stages: the same names as the subcommands, DVC stages and Prefect tasks."""
    from dataclasses import asdict

    from vtp.stages import STAGES

    if as_json:
        typer.echo(json.dumps({k: asdict(v) for k, v in STAGES.items()}, indent=2))
        return
    for s in STAGES.values():
        typer.echo(f"{s.name:12s} {s.summary}\n{'':12s} reads: {', '.join(s.reads)}; "
                   f"{'per configuration' if s.per_config else 'once'}")


@app.command()
@stage
def evaluate(config: ConfigOpt = None, set_: SetOpt = None, params: ParamsOpt = Path("params.yaml"),
             tokenizer: Annotated[Optional[Path], typer.Option(help="A vtp tokenizer or diffusers AutoencoderKL "
                                                               "directory (default: runs/<cfg>/tokenizer).")] = None):
    """Evaluate reconstruction and understanding; writes runs/<cfg>/eval/metrics.json and grids."""
    cfg = resolve(config, set_, params)
    from vtp.eval.evaluate import run_evaluate

    run_evaluate(cfg, tokenizer_dir=tokenizer)


@app.command()
@stage
def latents(config: ConfigOpt = None, set_: SetOpt = None, params: ParamsOpt = Path("params.yaml"),
            tokenizer: Annotated[Optional[Path], typer.Option(help="A vtp tokenizer or diffusers AutoencoderKL "
                                                              "directory (default: runs/<cfg>/tokenizer).")] = None):
    """Encode the training split (as is and flipped) into latent shards with channel statistics."""
    cfg = resolve(config, set_, params)
    from vtp.data.encode_latents import run_latents

    run_latents(cfg, tokenizer_dir=tokenizer)


@app.command("train-dit")
@stage
def train_dit(config: ConfigOpt = None, set_: SetOpt = None, params: ParamsOpt = Path("params.yaml"),
              fresh: FreshOpt = False):
    """Train a class-conditional DiT on the tokenizer's latents (flow matching). Resumes by default."""
    cfg = resolve(config, set_, params)
    from vtp.train.dit import run_train_dit

    run_train_dit(cfg, resume=not fresh)


@app.command()
@stage
def judge(config: ConfigOpt = None, set_: SetOpt = None, params: ParamsOpt = Path("params.yaml")):
    """Train the independent judge of samples: a small CNN on the real images' `judge.label`."""
    cfg = resolve(config, set_, params)
    from vtp.eval.judge import run_judge

    run_judge(cfg)


@app.command()
@stage
def sample(config: ConfigOpt = None, set_: SetOpt = None, params: ParamsOpt = Path("params.yaml"),
           num: Annotated[Optional[int], typer.Option("--num", help="Images (default: sample.num).")] = None,
           cfg_scale: Annotated[Optional[float], typer.Option("--cfg-scale", help="Guidance scale (default: "
                                                              "sample.cfg_scale).")] = None):
    """Sample images from the trained DiT through the tokenizer's decoder: grids per class and an .npz."""
    cfg = resolve(config, set_, params)
    if num is not None and num < 1:
        raise UsageError(f"--num {num}: expected >= 1")
    from vtp.diffusion.generate import run_sample

    run_sample(cfg, num=num, cfg_scale=cfg_scale)


@app.command("evaluate-generation")
@stage
def evaluate_generation(config: ConfigOpt = None, set_: SetOpt = None, params: ParamsOpt = Path("params.yaml")):
    """Score the DiT's samples against the val split (FD, KID, precision/recall, IS analogue, by feature space)
    and the FD convergence curve over the DiT's EMA snapshots; writes runs/<cfg>/generation/."""
    cfg = resolve(config, set_, params)
    from vtp.eval.generation import run_evaluate_generation

    run_evaluate_generation(cfg)


@app.command()
@stage
def report(configs: Annotated[Optional[list[str]], typer.Argument(help="Configurations (default: all).")] = None,
           params: ParamsOpt = Path("params.yaml"),
           runs_root: Annotated[Optional[Path], typer.Option(help="Default: params.yaml's runs_root.")] = None,
           out: Annotated[Path, typer.Option(help="Report folder.")] = Path("reports"),
           resamples: Annotated[int, typer.Option(min=1, help="Bootstrap resamples per fit.")] = 1000,
           seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0):
    """The scaling report: a table of every configuration, power-law fits against pretraining FLOPs with
    bootstrap intervals, ViTok's log E fit, plots, and the papers' claims checked; writes reports/."""
    names = config_names(params)
    unknown = sorted(set(configs or ()) - set(names))
    if unknown:
        raise UsageError(f"unknown configuration(s) {', '.join(unknown)}; choose from: {', '.join(names)}")
    from vtp.report.build import run_report

    root = runs_root or Path(resolve(None, None, params).runs_root)
    doc = run_report(list(configs or names), root, out, params, resamples=resamples, seed=seed)
    typer.echo(doc["summary_md"])


def main() -> None:  # console-script entry point
    app()


if __name__ == "__main__":
    sys.exit(main())
