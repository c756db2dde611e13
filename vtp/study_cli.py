"""`vtp study`: list, show and use the studies in studies/ (beside params.yaml); see vtp.config.study.

Registered by vtp.cli; it imports vtp.cli only when a command runs, so either module imports first.
"""
from __future__ import annotations

import functools
import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Callable

import typer

study_app = typer.Typer(no_args_is_help=True, help="Studies: configurations generated from axes (studies/*.yaml).")

ParamsOpt = Annotated[Path, typer.Option("--params", help="Parameters file; studies/ lies beside it.")]
NameArg = Annotated[str, typer.Argument(help="Study name (`vtp study list`).")]


def staged(fn: Callable) -> Callable:
    """vtp.cli.stage (errors -> exit codes), looked up at call time."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from vtp.cli import stage

        return stage(fn)(*args, **kwargs)

    return wrapper


def studies_dir(params: Path) -> Path:
    return params.parent / "studies"


def hardware_line(hw) -> str:
    return f"{hw.name}: {hw.devices} x {hw.peak_tflops:g} TFLOP/s at MFU {hw.mfu:g}"


def table(rows) -> list[str]:
    """One line per configuration, then the totals (`vtp study show`, `vtp config list`)."""
    lines = [f"{'name':18s} {'objectives':13s} {'size':22s} {'E':>6s} {'steps':>14s} {'tok FLOPs':>9s} "
             f"{'DiT FLOPs':>9s} {'GPU-h':>8s} {'hours':>7s}"]
    for r in rows:
        steps = f"{r.steps}" + (f" (={r.equal_compute_with})" if r.equal_compute_with else "")
        lines.append(f"{r.name:18s} {r.objectives:13s} {r.size:22s} {r.E:6d} {steps:>14s} {r.tokenizer_flops:9.2e} "
                     f"{r.dit_flops:9.2e} {r.gpu_hours:8.1f} {r.hours:7.2f}")
    lines.append(f"{'total':18s} {'':13s} {'':22s} {'':6s} {'':14s} {sum(r.tokenizer_flops for r in rows):9.2e} "
                 f"{sum(r.dit_flops for r in rows):9.2e} {sum(r.gpu_hours for r in rows):8.1f} "
                 f"{sum(r.hours for r in rows):7.2f}")
    return lines


@study_app.command("list")
@staged
def study_list(params: ParamsOpt = Path("params.yaml")):
    """Each study with its configuration count, training FLOPs and GPU-hours on its declared hardware."""
    from vtp.config.study import estimate, load_study, study_names

    typer.echo(f"{'study':20s} {'configs':>7s} {'FLOPs':>9s} {'GPU-h':>9s} {'hours':>8s}  hardware")
    for name in study_names(studies_dir(params)):
        study = load_study(name, studies_dir(params))
        rows = estimate(study, params)
        typer.echo(f"{name:20s} {len(rows):7d} {sum(r.total_flops for r in rows):9.2e} "
                   f"{sum(r.gpu_hours for r in rows):9.1f} {sum(r.hours for r in rows):8.2f}  "
                   f"{hardware_line(study.hardware)}")


@study_app.command("show")
@staged
def study_show(name: NameArg, params: ParamsOpt = Path("params.yaml"),
               as_json: Annotated[bool, typer.Option("--json")] = False):
    """The study's configurations: objectives, size, E, steps, tokenizer and DiT FLOPs, GPU-hours."""
    from vtp.config.study import estimate, load_study

    study = load_study(name, studies_dir(params))
    rows = estimate(study, params)
    if as_json:
        typer.echo(json.dumps({"study": name, "description": study.description,
                               "hardware": study.hardware.model_dump(), "configs": [asdict(r) for r in rows]},
                              indent=2))
        return
    typer.echo(f"{name}: {study.description}\nestimated from model FLOPs on {hardware_line(study.hardware)} "
               f"(hours: wall clock on all devices)\n")
    typer.echo("\n".join(table(rows)))


@study_app.command("use")
@staged
def study_use(name: NameArg, params: ParamsOpt = Path("params.yaml")):
    """Write the study's configurations into params.yaml's `configs:` (and dvc.yaml's per-configuration block)."""
    from vtp.config.base import ConfigError
    from vtp.config.pipeline import MARKER, sync_dvc_yaml
    from vtp.config.study import expand, load_study, write_configs

    study = load_study(name, studies_dir(params))
    dvc_yaml = params.parent / "dvc.yaml"
    if dvc_yaml.exists() and MARKER not in dvc_yaml.read_text():  # checked before params.yaml is touched
        raise ConfigError(f"{dvc_yaml}: no per-configuration block (the line {MARKER.strip()!r}) to rewrite")
    changes = write_configs(params, study)
    for what, names in changes.items():
        if names:
            typer.echo(f"{params}: {what}: {', '.join(names)}")
    if dvc_yaml.exists():
        typer.echo(f"{dvc_yaml}: {'rewritten' if sync_dvc_yaml(dvc_yaml, list(expand(study))) else 'unchanged'}")
    else:
        typer.echo(f"no dvc.yaml beside {params}: only {params} written")
