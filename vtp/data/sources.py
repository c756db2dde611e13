"""Listing the inputs of an ingest: an image folder, a pairs table, or existing WebDataset shards.

Listing only reads directory entries, table rows and tar headers. Images are read and checked later, in the
workers (`vtp.data.ingest`). Whatever cannot become a sample already at this stage (a hidden file, a row
without a caption...) is returned as a `Skipped` with a stable reason code.
"""
from __future__ import annotations

import csv
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from vtp.data.preprocess import IMAGE_EXTENSIONS
from vtp.data.shards import Member, index_tar, read_member

PAIR_COLUMNS = ("path", "caption")  # required; "label" is optional
SHARD_IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp")


@dataclass
class Item:
    """One input: where its image is, and its caption (or the file holding it) and labels."""
    ident: str  # how the manifest names this input
    image: str | Member
    caption: str | None = None
    caption_file: str | None = None
    labels: dict[str, int] = field(default_factory=dict)
    split: str | None = None  # fixed by the input (shards named train-/val-); None: decided by the image hash


@dataclass
class Skipped:
    input: str
    reason: str
    detail: str


@dataclass
class Inputs:
    items: list[Item]
    skipped: list[Skipped]
    label_sets: dict[str, list[str]]
    primary_label: str | None


def printable(name: str) -> str:
    """A file name as manifest text: undecodable bytes and control characters written as escapes."""
    raw = os.fsencode(name).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in raw)


def _odd_name(name: str) -> str | None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "the name is not valid UTF-8"
    if not name.isprintable():
        return "the name contains control characters"
    return None


def folder_inputs(root: Path, caption_template: str) -> Inputs:
    """`root/<class>/**/<image>`; the caption is `<image stem>.txt` beside the image, else the template."""
    items: list[Item] = []
    skipped: list[Skipped] = []
    classes = sorted(d.name for d in os.scandir(root) if d.is_dir(follow_symlinks=False)
                     and not d.name.startswith(".") and _odd_name(d.name) is None)
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        rel = printable(entry.name)
        if entry.name.startswith("."):
            skipped.append(Skipped(rel, "hidden_file", "names starting with '.' are system or editor files"))
        elif (odd := _odd_name(entry.name)) is not None:
            skipped.append(Skipped(rel, "odd_file_name", odd))
        elif not entry.is_dir(follow_symlinks=False):
            skipped.append(Skipped(rel, "not_in_class_folder", "files must lie inside a per-class sub-folder"))
    for label, cls in enumerate(classes):
        caption = caption_template.format(label=cls.replace("_", " "))
        for dirpath, dirnames, filenames in os.walk(root / cls):
            rel_dir = Path(dirpath).relative_to(root)
            for d in list(dirnames):
                if d.startswith("."):
                    skipped.append(Skipped(printable(str(rel_dir / d)) + "/", "hidden_file",
                                           "hidden folder (not searched)"))
                elif Path(dirpath, d).is_symlink():
                    skipped.append(Skipped(printable(str(rel_dir / d)) + "/", "unreadable",
                                           "symbolic link to a folder (not followed)"))
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            names = set(filenames)
            for name in sorted(filenames):
                rel = printable(str(rel_dir / name))
                stem, ext = os.path.splitext(name)
                if name.startswith("."):
                    skipped.append(Skipped(rel, "hidden_file", "names starting with '.' are system or editor files"))
                elif (odd := _odd_name(name)) is not None:
                    skipped.append(Skipped(rel, "odd_file_name", odd))
                elif ext.lower() in IMAGE_EXTENSIONS:
                    side = stem + ".txt"
                    items.append(Item(rel, os.path.join(dirpath, name), caption=None if side in names else caption,
                                      caption_file=os.path.join(dirpath, side) if side in names else None,
                                      labels={"class": label}))
                elif not (ext == ".txt" and any(stem + e in names or stem + e.upper() in names
                                                for e in IMAGE_EXTENSIONS)):
                    skipped.append(Skipped(rel, "unsupported_extension",
                                           f"not one of {', '.join(IMAGE_EXTENSIONS)} (or a caption beside one)"))
    return Inputs(items, skipped, {"class": classes}, "class")


def _read_rows(path: Path) -> tuple[list[tuple[int, dict | None]], list[str]]:
    """[(row number, row or None if unparsable)], column names. Raises ValueError for a wrong table."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows: list[tuple[int, dict | None]] = []
        columns: set[str] = set()
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    row = None
                rows.append((n, row if isinstance(row, dict) else None))
                columns |= set(row) if isinstance(row, dict) else set()
        return rows, sorted(columns)
    if suffix in (".csv", ".tsv"):
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            return [(reader.line_num, row) for row in reader], list(reader.fieldnames or [])
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return list(enumerate(table.to_pylist(), 1)), table.column_names
    raise ValueError(f"--path {path}: expected a .jsonl, .csv, .tsv or .parquet pairs table, got {suffix!r}")


def _text(value) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def _class_names(values: set[str]) -> list[str]:
    return sorted(values, key=int) if all(v.lstrip("-").isdigit() for v in values) else sorted(values)


def pairs_inputs(path: Path) -> Inputs:
    """Rows with `path` (relative to the table's folder), `caption` and optionally `label`."""
    rows, columns = _read_rows(path)
    if rows and not set(PAIR_COLUMNS) <= set(columns):
        raise ValueError(f"--path {path}: expected columns {', '.join(PAIR_COLUMNS)} (and optionally label); "
                         f"found: {', '.join(columns) or 'none'}")
    labelled = {_text(r.get("label")) for _, r in rows if r is not None} - {None}
    names = _class_names(labelled)  # type: ignore[arg-type]
    index = {n: i for i, n in enumerate(names)}
    items: list[Item] = []
    skipped: list[Skipped] = []
    for n, row in rows:
        where = f"{path.name}:{n}"
        if row is None:
            skipped.append(Skipped(where, "bad_row", "not a JSON object"))
            continue
        values = {k: _text(row.get(k)) for k in ("path", "caption", "label")}
        if any(v is not None and _odd_name(v) for v in values.values()):
            skipped.append(Skipped(where, "bad_row", "text that is not valid UTF-8"))
        elif values["path"] is None:
            skipped.append(Skipped(where, "missing_path", "empty path"))
        elif values["caption"] is None:
            skipped.append(Skipped(f"{where} {values['path']}", "missing_caption", "empty or missing caption"))
        elif names and values["label"] is None:
            skipped.append(Skipped(f"{where} {values['path']}", "missing_label", "other rows have labels"))
        else:
            image = Path(str(row["path"]).strip())
            image = image if image.is_absolute() else path.parent / image
            labels = {"class": index[values["label"]]} if names else {}
            items.append(Item(f"{where} {values['path']}", str(image), caption=values["caption"], labels=labels))
    return Inputs(items, skipped, {"class": names} if names else {}, "class" if names else None)


def _shard_caption(members: dict[str, Member], meta: dict) -> str | None:
    if "txt" in members:
        return _text(read_member(members["txt"]).decode("utf-8", "replace"))
    return _text(meta.get("caption"))


def shard_inputs(path: Path) -> Inputs:
    """Samples of `path` (one .tar, or every .tar below a folder); a `manifest.json` there names the labels."""
    tars = [path] if path.is_file() else sorted(t for t in path.rglob("*.tar")
                                                if not any(p.startswith(".") for p in t.relative_to(path).parts))
    if not tars:
        raise ValueError(f"--path {path}: expected a .tar shard or a folder containing some; found none")
    manifest_file = (path if path.is_dir() else path.parent) / "manifest.json"
    manifest = json.loads(manifest_file.read_text()) if manifest_file.exists() else {}
    names: dict[str, list[str]] = manifest.get("label_sets", {})
    primary = manifest.get("primary_label")
    items: list[Item] = []
    skipped: list[Skipped] = []
    seen_max: dict[str, int] = {}
    for tar in tars:
        rel = str(tar.relative_to(path)) if path.is_dir() else tar.name
        split = next((s for s in ("train", "val") if tar.name.startswith(f"{s}-")), None)
        try:
            for key, members in index_tar(tar):
                ident = f"{rel}:{key}"
                try:
                    item = _shard_item(ident, members, split)
                except (ValueError, TypeError, UnicodeDecodeError, OSError) as e:
                    skipped.append(Skipped(ident, "bad_sample", f"{type(e).__name__}: {e}"))
                    continue
                if isinstance(item, Skipped):
                    skipped.append(item)
                    continue
                for k, v in item.labels.items():
                    seen_max[k] = max(seen_max.get(k, -1), v)
                items.append(item)
        except (tarfile.TarError, OSError) as e:
            skipped.append(Skipped(rel, "corrupt_shard", f"{type(e).__name__}: {e} (samples before it were kept)"))
    if primary is None and "class" in seen_max:
        primary = "class"
    return _check_shard_labels(items, skipped, names, primary, seen_max)


def _shard_item(ident: str, members: dict[str, Member], split: str | None) -> Item | Skipped:
    image = next((members[e] for e in SHARD_IMAGE_EXTENSIONS if e in members), None)
    meta = json.loads(read_member(members["json"])) if "json" in members else {}
    labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else None
    if labels is None and "cls" in members:
        labels = {"class": int(read_member(members["cls"]).strip())}
    caption = _shard_caption(members, meta)
    if image is None:
        return Skipped(ident, "missing_image", f"no .{'/.'.join(SHARD_IMAGE_EXTENSIONS)} file")
    if caption is None:
        return Skipped(ident, "missing_caption", "no .txt and no caption in .json")
    return Item(ident, image, caption=caption, labels={k: int(v) for k, v in (labels or {}).items()}, split=split)


def _check_shard_labels(items: list[Item], skipped: list[Skipped], names: dict[str, list[str]],
                        primary: str | None, seen_max: dict[str, int]) -> Inputs:
    """Every sample must carry the same label sets with indices inside their class lists."""
    label_sets = {k: names.get(k) or [str(i) for i in range(m + 1)] for k, m in sorted(seen_max.items())}
    kept = []
    for item in items:
        if set(item.labels) != set(label_sets):
            skipped.append(Skipped(item.ident, "missing_label",
                                   f"has label sets {sorted(item.labels)}, others have {sorted(label_sets)}"))
        elif any(not 0 <= v < len(label_sets[k]) for k, v in item.labels.items()):
            skipped.append(Skipped(item.ident, "bad_label", f"labels {item.labels} outside the class lists"))
        else:
            kept.append(item)
    if primary not in label_sets:
        primary = next(iter(label_sets), None)
    return Inputs(kept, skipped, label_sets, primary)


def read_caption_file(path: str) -> str | None:
    return _text(Path(path).read_bytes().decode("utf-8", "replace"))
