"""`ingest` from every source; every kind of bad input skipped and listed; idempotent, atomic, stable splits."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_data_preprocess import _png_claiming, encoded, noise

from vtp.config import load_config
from vtp.data import synthetic
from vtp.data.ingest import ingest
from vtp.data.shards import ShardWriter, split_member_name


@pytest.fixture
def cfg_for(tmp_path, params_file):
    def make(*overrides: str):
        base = [f"data.root={tmp_path / 'out'}", "data.resolution=32", "aug.global_crop_size=32",
                "aug.local_crop_size=16", "data.synthetic_train=24", "data.synthetic_val=6", "data.shard_size=10"]
        return load_config(overrides=[*base, *overrides], params=params_file)
    return make


def run(cfg, source="synthetic", path=None, name="ds", workers=1, strict=False) -> dict:
    return ingest(source, path, Path(cfg.data.root), name, cfg.data.resolution, workers, strict, cfg)


def samples(directory: Path) -> dict[str, dict[str, bytes]]:
    """{key: {extension: bytes}} over all shards, read with plain tarfile."""
    out: dict[str, dict[str, bytes]] = {}
    for tar in sorted(directory.glob("*.tar")):
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                key, ext = split_member_name(m.name)
                out.setdefault(f"{tar.name[:-11]}/{key}", {})[ext] = tf.extractfile(m).read()
    return out


def reasons(manifest: dict) -> dict[str, str]:
    return {s["input"]: s["reason"] for s in manifest["skipped"]}


def test_synthetic_source(cfg_for):
    cfg = cfg_for()
    m = run(cfg)
    out = Path(cfg.data.root) / "ds"
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "run.json", "train-000000.tar",
                                                      "train-000001.tar", "train-000002.tar", "val-000000.tar"]
    assert m == json.loads((out / "manifest.json").read_text())
    assert json.loads((out / "run.json").read_text())["status"] == "ok"
    assert (m["splits"]["train"]["count"], m["splits"]["val"]["count"], m["skipped_count"]) == (24, 6, 0)
    assert m["label_sets"]["shape"] == list(synthetic.SHAPES) and len(m["label_sets"]["shape_color"]) == len(
        synthetic.SHAPES) * len(synthetic.SHAPE_COLORS)
    assert m["primary_label"] == "shape" and m["resolution"] == 32 and m["content_hash"].startswith("sha256:")
    assert sum(m["splits"]["train"]["classes"]["shape"].values()) == 24
    assert 5 <= m["caption_length"]["words"]["min"] <= m["caption_length"]["words"]["max"] <= 20
    got = samples(out)
    assert len(got) == 30
    for split, index in (("train", 0), ("val", 5)):
        files = got[f"{split}/{split}_{index:08d}"]
        image, caption, labels = synthetic.sample(cfg.seed, split, index, 32)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(files["png"]))), image)
        meta = json.loads(files["json"])
        assert files["txt"].decode() == meta["caption"] == caption and meta["labels"] == labels
        assert int(files["cls"]) == labels["shape"]


def test_rerun_is_idempotent_and_workers_do_not_change_the_output(cfg_for):
    cfg = cfg_for()
    out = Path(cfg.data.root) / "ds"
    first = run(cfg)
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.name != "run.json"}
    second = run(cfg, workers=2)
    assert second["content_hash"] == first["content_hash"]
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "run.json"} == files
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # no staging or old copies left


def _write(data: bytes):
    return lambda path: Path(path).write_bytes(data)


# One builder per class of bad input: relative file name -> (write it, the reason the manifest must give).
BAD_INPUTS = {
    "cat/truncated.jpg": (_write(encoded(noise(64, 64, seed=7), "JPEG")[:600]), "truncated"),
    "cat/text.jpg": (_write(b"not an image"), "not_an_image"),
    "cat/empty.png": (_write(b""), "empty_file"),
    "cat/bomb.png": (_write(_png_claiming(60000, 60000)), "decompression_bomb"),
    "cat/.DS_Store": (_write(b"\0\1"), "hidden_file"),
    "cat/notes.md": (_write(b"hello"), "unsupported_extension"),
    "cat/line\nbreak.png": (_write(encoded(noise(20, 20, seed=9), "PNG")), "odd_file_name"),
    "cat/latin1-\udce9.png": (_write(encoded(noise(20, 20, seed=11), "PNG")), "odd_file_name"),  # byte 0xE9
    "stray.png": (_write(encoded(noise(20, 20, seed=10), "PNG")), "not_in_class_folder"),
    "cat/dangling.png": (lambda path: os.symlink(Path(path).parent / "missing.png", path), "unreadable"),
}


def add_bad(root: Path, name: str) -> str:
    """Create BAD_INPUTS[name] under root; return the name as the manifest writes it."""
    write, _ = BAD_INPUTS[name]
    path = os.fsencode(root) + b"/" + os.fsencode(name)  # fsencode turns the \udce9 escape back into byte 0xE9
    try:
        write(os.fsdecode(path))
    except OSError:
        pytest.skip("this file system refuses the file name")
    return os.fsencode(name).decode("utf-8", "backslashreplace").replace("\n", "\\n")


def make_folder(root: Path) -> dict[str, str]:
    """Classes cat/dog with good images and one of every bad input; returns {input: expected skip reason}."""
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
    for i in range(6):
        noise(40 + i, 30, seed=i).save(root / "cat" / f"cat {i}.png")
        noise(30, 50, seed=100 + i).save(root / "dog" / f"dög_{i}.v2.JPG", quality=95)
    Image.new("RGBA", (20, 20), (0, 0, 0, 0)).save(root / "dog" / "clear.png")
    (root / "dog" / "clear.txt").write_text("a clear  dog\n")
    Image.new("P", (20, 20)).save(root / "dog" / "palette.gif")
    shutil.copy(root / "cat" / "cat 0.png", root / "cat" / "cat 0 copy.png")
    expected = {"cat/cat 0 copy.png": "duplicate"}
    for name, (_, reason) in BAD_INPUTS.items():
        expected[add_bad(root, name)] = reason
    return expected


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_each_kind_of_bad_input_is_skipped_listed_and_the_run_goes_on(cfg_for, tmp_path, name):
    (tmp_path / "in" / "cat").mkdir(parents=True)
    noise(24, 24).save(tmp_path / "in" / "cat" / "good.png")
    listed = add_bad(tmp_path / "in", name)
    m = run(cfg_for(), "folder", tmp_path / "in")
    assert m["samples"] == 1 and m["skipped_count"] == 1
    assert m["skipped"][0]["input"] == listed and m["skipped"][0]["reason"] == BAD_INPUTS[name][1]
    assert (Path(cfg_for().data.root) / "ds" / "manifest.json").exists()  # published: exit 0 unless --strict


def test_folder_source_ingests_good_files_and_lists_every_bad_one(cfg_for, tmp_path):
    expected = make_folder(tmp_path / "in")
    cfg = cfg_for("data.val_fraction=0.3")
    m = run(cfg, "folder", tmp_path / "in")
    assert reasons(m) == expected and m["skipped_count"] == len(expected)
    assert m["label_sets"] == {"class": ["cat", "dog"]} and m["primary_label"] == "class"
    assert m["samples"] == 14 and m["splits"]["val"]["count"] > 0
    got = {json.loads(f["json"])["input"]: f for f in samples(Path(cfg.data.root) / "ds").values()}
    assert json.loads(got["dog/clear.png"]["json"])["caption"] == "a clear dog"  # from clear.txt beside it
    assert (np.asarray(Image.open(io.BytesIO(got["dog/clear.png"]["png"]))) == 255).all()  # alpha on white
    assert got["cat/cat 1.png"]["txt"] == b"a photo of a cat." and got["cat/cat 1.png"]["cls"] == b"0"
    assert got["dog/d\u00f6g_3.v2.JPG"]["cls"] == b"1"
    assert all(Image.open(io.BytesIO(f["png"])).size == (32, 32) for f in got.values())


def test_strict_run_with_skips_is_not_published(cfg_for, tmp_path):
    make_folder(tmp_path / "in")
    cfg = cfg_for()
    m = run(cfg, "folder", tmp_path / "in", strict=True)
    assert m["skipped_count"] > 0
    assert not (Path(cfg.data.root) / "ds").exists()
    staged = Path(cfg.data.root) / ".ds.partial"
    assert json.loads((staged / "run.json").read_text())["status"] == "failed"


def write_pairs(directory: Path, fmt: str) -> Path:
    (directory / "img").mkdir(parents=True)
    for i in range(4):
        noise(24, 24, seed=i).save(directory / "img" / f"{i}.png")
    rows = [{"path": "img/0.png", "caption": "zero", "label": "even"},
            {"path": "img/1.png", "caption": " one\n", "label": "odd"},
            {"path": str(directory / "img" / "2.png"), "caption": "two", "label": "even"},
            {"path": "img/3.png", "caption": "", "label": "odd"},
            {"path": "img/404.png", "caption": "gone", "label": "odd"}]
    path = directory / f"pairs.{fmt}"
    if fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    elif fmt == "csv":
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["path", "caption", "label"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_pairs_source(cfg_for, tmp_path, fmt):
    path = write_pairs(tmp_path / "in", fmt)
    cfg = cfg_for()
    m = run(cfg, "pairs", path)
    assert m["label_sets"] == {"class": ["even", "odd"]} and m["samples"] == 3
    got = sorted(json.loads(f["json"])["caption"] for f in samples(Path(cfg.data.root) / "ds").values())
    assert got == ["one", "two", "zero"]
    skipped = sorted(s["reason"] for s in m["skipped"])
    assert skipped == sorted(["missing_caption", "unreadable"] + (["bad_row"] if fmt == "jsonl" else []))


def test_pairs_table_without_the_needed_columns_is_an_error(cfg_for, tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("file,text\na.png,hello\n")
    with pytest.raises(ValueError, match="expected columns path, caption .* found: file, text"):
        run(cfg_for(), "pairs", path)


def test_shards_source_validates_and_reshards(cfg_for, tmp_path):
    cfg = cfg_for()
    first = run(cfg, name="orig")
    src = Path(cfg.data.root) / "orig"
    bad = tmp_path / "extra"
    bad.mkdir()
    shutil.copy(src / "manifest.json", bad / "manifest.json")
    with tarfile.open(bad / "train-000009.tar", "w") as tf:  # a sample without caption
        data = encoded(noise(32, 32), "PNG")
        info = tarfile.TarInfo("nocap.png")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    (bad / "broken.tar").write_bytes((src / "val-000000.tar").read_bytes()[:5000])
    m = run(cfg_for("data.shard_size=7"), "shards", src, name="again")
    assert m["samples"] == first["samples"] and [s["count"] for s in m["shards"]][:4] == [7, 7, 7, 3]
    assert m["label_sets"] == first["label_sets"] and m["primary_label"] == "shape"
    assert m["splits"]["val"]["count"] == first["splits"]["val"]["count"]  # splits follow the input shard names
    old = {json.loads(f["json"])["caption"]: f["png"] for f in samples(src).values()}
    new = {json.loads(f["json"])["caption"]: f["png"] for f in samples(Path(cfg.data.root) / "again").values()}
    assert old == new  # exact images keep their bytes
    shutil.copytree(src, bad / "orig")
    m2 = run(cfg, "shards", bad, name="mixed")
    assert {s["reason"] for s in m2["skipped"]} == {"missing_caption", "corrupt_shard"}
    assert m2["samples"] >= first["samples"]


def test_interrupted_ingest_keeps_the_old_dataset_and_never_shows_partial_shards(cfg_for, monkeypatch):
    cfg = cfg_for("data.synthetic_train=60", "data.shard_size=8")
    root = Path(cfg.data.root)
    before = run(cfg)
    old_files = {p.name: p.read_bytes() for p in (root / "ds").iterdir()}
    write, calls = ShardWriter.write, []

    published = {s["file"]: s["count"] for s in before["shards"]}

    def checked_write(self, key, files):
        for tar in root.rglob("*.tar"):  # every file under a final name is a complete shard
            with tarfile.open(tar) as tf:
                full = published[tar.name] if tar.parent.name == "ds" else 8
                assert len(tf.getnames()) == 4 * full
        calls.append(key)
        if len(calls) == 30:
            raise KeyboardInterrupt
        write(self, key, files)

    monkeypatch.setattr(ShardWriter, "write", checked_write)
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    assert {p.name: p.read_bytes() for p in (root / "ds").iterdir()} == old_files
    assert not list(root.rglob("*.tmp"))
    monkeypatch.setattr(ShardWriter, "write", write)
    assert run(cfg)["content_hash"] == before["content_hash"]
    assert not (root / ".ds.partial").exists()


def test_adding_images_never_moves_old_ones_between_splits(cfg_for, tmp_path):
    src = tmp_path / "in" / "only"
    src.mkdir(parents=True)
    for i in range(30):
        noise(20, 20, seed=i).save(src / f"{i}.png")
    cfg = cfg_for("data.val_fraction=0.3")
    split_of = lambda: {json.loads(f["json"])["input"]: key.split("/")[0]  # noqa: E731
                        for key, f in samples(Path(cfg.data.root) / "ds").items()}
    run(cfg, "folder", tmp_path / "in")
    before = split_of()
    for i in range(30, 60):
        noise(20, 20, seed=i).save(src / f"{i}.png")
    run(cfg, "folder", tmp_path / "in")
    after = split_of()
    assert len(after) == 60 and {k: after[k] for k in before} == before
    assert 0.1 < list(after.values()).count("val") / 60 < 0.5


def test_refuses_to_replace_a_folder_that_is_not_a_dataset(cfg_for):
    cfg = cfg_for()
    target = Path(cfg.data.root) / "ds"
    target.mkdir(parents=True)
    (target / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a vtp dataset"):
        run(cfg)
    assert (target / "precious.txt").exists()


def test_cli_exit_codes(tmp_path, params_file):
    from typer.testing import CliRunner

    from vtp.cli import app

    make_folder(tmp_path / "in")
    args = ["ingest", "--source", "folder", "--path", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
            "--resolution", "32", "--workers", "1", "--params", str(params_file)]
    ok = CliRunner().invoke(app, args)
    assert ok.exit_code == 0, ok.output
    assert CliRunner().invoke(app, [*args, "--strict"]).exit_code == 1


def test_an_ingest_that_finds_nothing_fails_and_publishes_nothing(cfg_for, tmp_path):
    (tmp_path / "in" / "cls").mkdir(parents=True)
    (tmp_path / "in" / "cls" / "a.jpg").write_text("not an image")
    cfg = cfg_for()
    with pytest.raises(ValueError, match="nothing to ingest .* 1 inputs"):
        run(cfg, "folder", tmp_path / "in")
    assert not (Path(cfg.data.root) / "ds").exists()
