"""Studies: expansion, equal compute, errors that name the field, params.yaml's configs block, estimates, CLI."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from vtp.config import ConfigError, load_config, read_params
from vtp.config import study as st
from vtp.config.study import expand, load_study
from vtp.study_cli import study_app

REPO = Path(__file__).resolve().parents[1]

HW = {"name": "cpu", "peak_tflops": 0.2, "mfu": 0.25, "devices": 1}
OBJECTIVES = {"ae": {"loss": {"clip": False, "ssl": False}}, "vtp": {"loss": {"clip": True, "ssl": True}}}
BUDGETS = {"s100": {"train": {"steps": 100}}, "s200": {"train": {"steps": 200}}}


def make(**fields) -> st.Study:
    return st.parse_study({"name": "t", "description": "test", "hardware": HW, **fields})


def write_study(root, text: str) -> None:
    root.mkdir(exist_ok=True)
    name = yaml.safe_load(text)["name"]
    (root / f"{name}.yaml").write_text(text)


def test_product_names_exclude_and_include():
    e = {"d8": {"model": {"bottleneck_dim": 8}}, "d32": {"model": {"bottleneck_dim": 32}}}
    s = make(axes={"objectives": OBJECTIVES, "budget": BUDGETS, "E": e, "res": {"r32": {"data": {"resolution": 32}}}},
             exclude=[{"E": "d8"}], include=[{"objectives": "ae", "budget": ["s100"], "E": "d8"}])
    configs = expand(s)
    # product order; the single-level axis `res` is left out of the names
    assert list(configs) == ["ae-s100-d8", "ae-s100-d32", "ae-s200-d32", "vtp-s100-d32", "vtp-s200-d32"]
    assert configs["ae-s100-d8"] == {"loss": {"clip": False, "ssl": False}, "train": {"steps": 100},
                                     "model": {"bottleneck_dim": 8}, "data": {"resolution": 32}}
    only = make(axes={"size": {"s": {"model": {"size": "tiny"}}}}, base={"train": {"steps": 50}})
    assert expand(only) == {"s": {"train": {"steps": 50}, "model": {"size": "tiny"}}}  # base folded in


def test_equal_compute_derives_within_groups():
    s = make(axes={"objectives": OBJECTIVES, "budget": BUDGETS}, base={"train": {"steps": 300, "lr": 0.002}},
             equal_compute={"axis": "objectives", "reference": "vtp"})
    configs = expand(s)
    assert configs["ae-s200"]["train"] == {"lr": 0.002, "equal_compute_with": "vtp-s200"}  # its steps dropped
    assert configs["vtp-s200"]["train"] == {"steps": 200, "lr": 0.002}
    e = {"d8": {"model": {"bottleneck_dim": 8}}, "d16": {"model": {"bottleneck_dim": 16}}}
    sweep = {"axes": {"objectives": OBJECTIVES, "budget": BUDGETS, "E": e},
             "exclude": [{"objectives": "vtp", "E": "d8"}]}
    with pytest.raises(ConfigError, match="study 't': equal_compute = 'ae-s100-d8': needs exactly one reference at "
                       "objectives = vtp with the same budget, E; found none"):
        make(**sweep, equal_compute={"axis": "objectives", "reference": "vtp"})
    grouped = make(**sweep, equal_compute={"axis": "objectives", "reference": "vtp", "within": ["budget"]})
    assert expand(grouped)["ae-s100-d8"]["train"] == {"equal_compute_with": "vtp-s100-d16"}


@pytest.mark.parametrize("fields, message", [
    ({"axis": {}}, "study 't': axis: unknown key; allowed keys: name, description, hardware, base_from"),
    ({"hardware": {**HW, "mfu": 2}}, "hardware.mfu = 2: Input should be less than or equal to 1"),
    ({"exclude": [{"objective": "ae"}]}, "exclude[0] = 'objective': unknown axis; allowed: objectives"),
    ({"include": [{"objectives": ["ae", "dino"]}]}, "include[0].objectives = 'dino': unknown level; allowed: ae, vtp"),
    ({"axes": {"objectives": {"a-e": {}}}}, "axes.objectives = 'a-e': axis and level names are letters"),
    ({"axes": {"objectives": {"base": {}}}}, "axes = 'base': is not a usable configuration name"),
    ({"exclude": [{}]}, "exclude = [{}]: excludes every configuration"),
    ({"equal_compute": {"axis": "objectives", "reference": "dino"}}, "equal_compute.reference = 'dino': unknown level"),
])
def test_bad_studies_name_the_field(tmp_path, fields, message):
    raw = {"name": "t", "description": "d", "hardware": HW, "axes": {"objectives": OBJECTIVES}, **fields}
    write_study(tmp_path, yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_study("t", tmp_path)


def test_bad_configurations_and_files_are_refused(tmp_path, params_file):
    bad = make(axes={"E": {"d0": {"model": {"bottleneck_dim": 0}}, "d8": {"model": {"bottleneck_dim": 8}}}})
    with pytest.raises(ConfigError, match="study 't': config 'd0': model.bottleneck_dim = 0: .*greater than or equal"):
        st.resolve(bad, params_file)
    before = params_file.read_bytes()
    with pytest.raises(ConfigError, match="config 'd0'"):
        st.write_configs(params_file, bad)
    assert params_file.read_bytes() == before  # validated before anything is written
    write_study(tmp_path / "s", "name: dup\ndescription: d\nhardware: {name: c, peak_tflops: 1, mfu: 0.5}\n"
                "axes:\n  budget:\n    s1: {train: {steps: 10}}\n    s1: {train: {steps: 20}}\n")
    with pytest.raises(ConfigError, match="dup.yaml line 7: duplicate key 's1'"):
        load_study("dup", tmp_path / "s")
    (tmp_path / "s" / "other.yaml").write_text("name: dup\n")
    with pytest.raises(ConfigError, match="name = 'dup': must be the file's stem 'other'"):
        load_study("other", tmp_path / "s")
    with pytest.raises(ConfigError, match="study 'nosuch': unknown; choose from: dup, other"):
        load_study("nosuch", tmp_path / "s")


def test_params_yaml_is_the_default_study():
    assert expand(load_study("default", REPO / "studies")) == read_params(REPO / "params.yaml")["configs"]


def test_write_configs_keeps_the_rest_and_round_trips(params_file):
    text = params_file.read_text()
    head = text[:text.index("\nconfigs:") + 1]
    laptop = load_study("laptop", REPO / "studies")
    changes = st.write_configs(params_file, laptop)
    assert changes["removed"] == ["ae", "vtp"] and len(changes["added"]) == 9
    written = params_file.read_text()
    assert written.startswith(head)
    assert written[len(head):].startswith("# generated by `vtp study use laptop` from studies/laptop.yaml")
    assert read_params(params_file)["configs"] == expand(laptop) and "&id" not in written  # no YAML aliases
    assert load_config("ae-s600-d32", (), params_file).train.steps > 600  # AE steps derived from vtp-s600-d32
    assert load_config("ae-s300-d8", (), params_file).model.bottleneck_dim == 8
    assert st.recorded_study(params_file) == "laptop"

    st.write_configs(params_file, load_study("default", REPO / "studies"))  # the generated comment is replaced too
    again = params_file.read_text()
    assert again.startswith(head) and again.count("# generated by") == 1
    assert read_params(params_file)["configs"] == read_params(REPO / "params.yaml")["configs"]

    params_file.write_text(text + "later: 1\n")
    with pytest.raises(ConfigError, match="`configs:` must be the last top-level key.*'later' follows it"):
        st.write_configs(params_file, laptop)


@pytest.mark.parametrize("name", st.study_names(REPO / "studies"))
def test_every_shipped_study_validates_with_positive_hours(name):
    study = load_study(name, REPO / "studies")
    rows = st.estimate(study, REPO / "params.yaml")
    assert [r.name for r in rows] == list(expand(study)) and study.description
    assert all(r.tokenizer_flops > 0 and r.dit_flops > 0 and r.gpu_hours > 0 for r in rows)
    derived = {r.name: r.equal_compute_with for r in rows if r.equal_compute_with}
    by_name = {r.name: r for r in rows}
    for cfg, ref in derived.items():  # equal tokenizer FLOPs, to the rounding of one step
        assert abs(by_name[cfg].tokenizer_flops / by_name[ref].tokenizer_flops - 1) < 1 / by_name[ref].steps + 1e-3


def test_laptop_fits_a_laptop():
    rows = st.estimate(load_study("laptop", REPO / "studies"), REPO / "params.yaml")
    assert len(rows) <= 9 and sum(r.hours for r in rows) < 2


@pytest.fixture
def project(tmp_path, params_file):
    """params.yaml, dvc.yaml and two studies in one folder."""
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "studies").mkdir()
    for name in ("default", "laptop"):
        shutil.copy(REPO / "studies" / f"{name}.yaml", tmp_path / "studies")
    return params_file


def test_cli_list_show_use(project):
    app = typer.Typer()
    app.add_typer(study_app, name="study")
    run = CliRunner().invoke
    params = ["--params", str(project)]

    out = run(app, ["study", "list", *params])
    assert out.exit_code == 0, out.output
    assert [line.split()[:2] for line in out.output.splitlines()[1:]] == [["default", "2"], ["laptop", "9"]]

    out = run(app, ["study", "show", "laptop", "--json", *params])
    doc = json.loads(out.output)
    assert doc["hardware"]["name"] == "cpu-2core" and len(doc["configs"]) == 9
    assert {c["name"]: c["E"] for c in doc["configs"]}["ae-s300-d8"] == 128
    assert "ae-s600-d32" in run(app, ["study", "show", "laptop", *params]).output

    out = run(app, ["study", "use", "laptop", *params])
    assert out.exit_code == 0, out.output
    assert "removed: ae, vtp" in out.output and "dvc.yaml: rewritten" in out.output
    assert "runs/ae-s300-d8/eval/summary.json" in (project.parent / "dvc.yaml").read_text()
    assert st.params_hardware(project).name == "cpu-2core" and len(st.estimate(project)) == 9

    out = run(app, ["study", "use", "nosuch", *params])
    assert out.exit_code == 2 and "study 'nosuch': unknown; choose from: default, laptop" in out.output


def test_params_without_a_recorded_study_estimate_on_the_laptop(params_file):
    assert st.params_hardware(params_file) == st.LAPTOP
    assert [r.name for r in st.estimate(params_file)] == ["ae", "vtp"]
