"""The command line: exit codes (0 ok, 2 bad usage/config with nothing written, 1 run-time failure), --help."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from vtp.cli import app

runner = CliRunner()
COMMANDS = ["ingest", "pretrain", "decoder-gan", "latents", "train-dit", "judge", "sample", "evaluate", "report",
            "stages", "models", "flops",
            "config"]


@pytest.fixture
def workdir(tmp_path, params_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_unknown_config_exits_2_and_writes_nothing(workdir):
    before = files(workdir)
    result = runner.invoke(app, ["pretrain", "--config", "nosuch"])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["error: --config 'nosuch': unknown configuration; choose from: base, ae, vtp"]
    assert files(workdir) == before


def test_patch_not_dividing_resolution_exits_2_and_writes_nothing(workdir):
    raw = yaml.safe_load((workdir / "params.yaml").read_text())
    raw["model"]["patch"] = 15
    (workdir / "params.yaml").write_text(yaml.safe_dump(raw))
    before = files(workdir)
    for command in (["pretrain", "--config", "vtp"], ["evaluate", "--config", "ae"], ["ingest"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, (command, result.output)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "model.patch = 15" in lines[0] and "must divide data.resolution = 32" in lines[0]
    assert files(workdir) == before


def test_report_names_unknown_configurations_and_reports_missing_runs(workdir):
    result = runner.invoke(app, ["report", "nosuch"])
    assert result.exit_code == 2 and "unknown configuration(s) nosuch; choose from: ae, vtp" in result.stderr
    assert not (workdir / "reports").exists()
    result = runner.invoke(app, ["report", "--resamples", "10"])  # nothing has run yet: a report that says so
    assert result.exit_code == 0, result.output
    assert "# Scaling report" in result.stdout and "missing" in result.stdout
    assert {"summary.md", "fits.json", "table.csv"} <= {p.name for p in (workdir / "reports").iterdir()}


def test_config_show_json_is_the_resolved_config(workdir):
    result = runner.invoke(app, ["config", "show", "ae", "--json", "--set", "train.steps=77"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["name"] == "ae" and data["train"]["steps"] == 77 and data["loss"]["clip"] is False


def test_bad_set_syntax_exits_2(workdir):
    result = runner.invoke(app, ["config", "show", "vtp", "--set", "train.steps"])
    assert result.exit_code == 2 and "expected key.path=value" in result.stderr


def test_unknown_flops_size_exits_2():
    result = runner.invoke(app, ["flops", "vtp-xxl"])
    assert result.exit_code == 2 and "unknown model size 'vtp-xxl'" in result.stderr


def test_console_script_exit_code(workdir):
    """The installed entry point (not just the Typer app) maps config errors to exit code 2."""
    proc = subprocess.run([sys.executable, "-m", "vtp.cli", "pretrain", "--config", "nosuch"], cwd=workdir,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown configuration" in proc.stderr
