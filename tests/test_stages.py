"""The stage registry is the one source of stage names, the sections they read and the code they run:
`dvc.yaml` and the CLI follow it, and a checkpoint's fingerprint hashes only what its stage reads."""
from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest
import yaml

from vtp.config import load_config
from vtp.stages import OPERATIONAL, STAGES, get_stage

REPO = Path(__file__).resolve().parents[1]


def find(name: str):
    try:
        return importlib.util.find_spec(name)
    except ModuleNotFoundError:  # `from vtp.x import name` where name is not a module
        return None


# Lazy imports that matter only to a stage reading the given section: config loading derives `train.steps` from
# `train.equal_compute_with` with the model FLOP estimate, which no stage that does not read `train:` can see (so
# ingest does not re-run on every model change).
ONLY_FOR_READERS = {"vtp.train.compute": "train"}


def imported_vtp_modules(entry_module: str, reads: tuple[str, ...] = ()) -> set[str]:
    """Every `vtp` module reachable from `entry_module` by import statements, function-level imports included
    (a static walk: lazy imports inside functions count), except the ONLY_FOR_READERS a stage does not read."""
    skip = {m for m, section in ONLY_FOR_READERS.items() if section not in reads}
    seen, todo = set(skip), [entry_module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        spec = find(name)
        if spec is None or spec.origin is None:
            continue
        seen.add(name)
        parts = name.split(".")
        for parent in (".".join(parts[:i]) for i in range(1, len(parts))):
            todo.append(parent)  # importing a.b.c runs a/__init__ and a/b/__init__
        tree = ast.parse(Path(spec.origin).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.split(".")[0] == "vtp"]
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "vtp":
                todo.append(node.module)
                todo += [f"{node.module}.{a.name}" for a in node.names]  # `from vtp.x import submodule`
    return seen - skip


def module_path(name: str) -> Path:
    return Path(importlib.util.find_spec(name).origin).resolve().relative_to(REPO)


def covered(path: Path, deps: list[str]) -> bool:
    return any(path == Path(d) or Path(d) in path.parents for d in deps)


@pytest.mark.parametrize("name", STAGES)
def test_each_stage_declares_the_code_it_imports(name):
    stage = get_stage(name)
    module = stage.entry.partition(":")[0]
    missing = sorted(str(module_path(m)) for m in imported_vtp_modules(module, stage.reads)
                     if not covered(module_path(m), list(stage.deps)))
    assert not missing, f"stage {name} imports code its deps do not cover: {missing}"
    assert callable(stage.function())


def dvc_stages() -> dict[str, dict]:
    doc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    return {name: body.get("do", body) for name, body in doc["stages"].items()}


def test_dvc_yaml_follows_the_registry():
    stages = dvc_stages()
    raw_params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert set(stages) <= set(STAGES), f"dvc.yaml stages not in the registry: {set(stages) - set(STAGES)}"
    for name, body in stages.items():
        stage = STAGES[name]
        code_deps = [d for d in body["deps"] if d.startswith("vtp")]
        assert sorted(code_deps) == sorted(stage.deps), name
        params = [p for p in body.get("params", []) if not str(p).startswith("configs.")]
        assert sorted(params) == sorted(stage.reads), name
        assert body["cmd"].split()[:2] == ["vtp", name], "a DVC stage runs the subcommand of its own name"
        for key in params:  # DVC fails a stage whose params key is absent from params.yaml
            head, _, field = str(key).partition(".")
            assert head in raw_params and (not field or field in raw_params[head]), f"{name}: {key} not in params.yaml"
        assert ("foreach" in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][name]) == stage.per_config


def test_the_per_configuration_block_lists_params_yaml_configurations(tmp_path):
    from vtp.config.pipeline import MARKER, render, sync_dvc_yaml

    configs = list(yaml.safe_load((REPO / "params.yaml").read_text())["configs"])
    text = (REPO / "dvc.yaml").read_text()
    assert text[text.index(MARKER):] == render(configs)
    report_deps = dvc_stages()["report"]["deps"]
    assert "runs/vtp/generation/summary.json" in report_deps and "runs/ae/eval/summary.json" in report_deps
    artifacts = yaml.safe_load(text)["artifacts"]
    assert artifacts["tokenizer-ae"]["path"] == "runs/ae/tokenizer/model.safetensors" and "dit-vtp" in artifacts

    copy = tmp_path / "dvc.yaml"
    copy.write_text(text)
    assert sync_dvc_yaml(copy, ["ae", "vtp", "ae_2x"]) and not sync_dvc_yaml(copy, ["ae", "vtp", "ae_2x"])
    assert copy.read_text().startswith(text[:text.index(MARKER)])  # everything above the block is kept
    assert "runs/ae_2x/eval/summary.json" in yaml.safe_load(copy.read_text())["stages"]["report"]["deps"]
    assert "tokenizer-ae-2x" in yaml.safe_load(copy.read_text())["artifacts"]


def test_every_stage_is_a_subcommand():
    from typer.main import get_command

    from vtp.cli import app

    commands = set(get_command(app).commands)
    assert set(STAGES) <= commands, f"stages without a `vtp` subcommand: {set(STAGES) - commands}"


def test_operational_fields_exist():
    data = load_config("vtp", [], REPO / "params.yaml").model_dump()
    for path in OPERATIONAL:
        node = data
        for part in path.split("."):
            assert part in node, f"OPERATIONAL names {path}, which the configuration does not have"
            node = node[part]


def fingerprint(stage: str, *sets: str) -> str:
    return get_stage(stage).fingerprint(load_config("vtp", list(sets), REPO / "params.yaml"))


@pytest.mark.parametrize("change", ["gan.steps=70", "train.checkpoint_every=3", "train.fsdp=true",
                                    "model.grad_checkpointing=true", "data.loader_workers=3", "data.root=/elsewhere",
                                    "eval.num_samples=999", "train.log_every=2", "runs_root=/tmp/x"])
def test_operational_or_unrelated_changes_keep_pretraining_resumable(change):
    assert fingerprint("pretrain", change) == fingerprint("pretrain")


@pytest.mark.parametrize("change", ["model.size=tiny", "train.lr=0.002", "loss.weight_rec=0.5", "seed=1",
                                    "aug.local_crops=2", "data.resolution=64"])
def test_changes_to_what_pretraining_computes_set_it_aside(change):
    base = ["model.size=tiny", "model.bottleneck_dim=8"] if change.startswith("data.resolution") else []
    assert fingerprint("pretrain", *base, change) != fingerprint("pretrain", *base)


def test_stage_two_follows_stage_one_and_its_own_section():
    assert fingerprint("decoder-gan", "gan.steps=70") != fingerprint("decoder-gan")
    assert fingerprint("decoder-gan", "train.lr=0.002") != fingerprint("decoder-gan")  # a new stage-1 tokenizer
    assert fingerprint("decoder-gan", "eval.num_samples=999") == fingerprint("decoder-gan")
    assert fingerprint("decoder-gan") != fingerprint("pretrain")
