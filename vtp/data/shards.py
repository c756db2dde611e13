"""WebDataset tar shards: writing them atomically and reproducibly, and indexing existing ones.

A sample is the files `<key>.<ext>` sharing one key: the image (`.png` or `.jpg`), the caption (`.txt`), the
primary label (`.cls`, a decimal integer) and `.json` ({"labels": {set: index}, "caption": ...}). Keys never
contain dots (WebDataset splits a member name at the first dot of its base name).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Iterator

if TYPE_CHECKING:
    import webdataset as wds

SHARD_NAME = re.compile(r"^(train|val)-(\d{6})\.tar$")
TMP_SUFFIX = ".tmp"


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def sample_files(image: bytes, fmt: str, caption: str, labels: dict[str, int], primary: str | None,
                 **extra) -> dict[str, bytes]:
    """The files of one sample (without the key), every value already bytes so the tar bytes are reproducible."""
    meta = {"caption": caption, "labels": labels, **extra}
    files = {fmt: image, "txt": caption.encode("utf-8"),
             "json": json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")}
    if primary is not None:
        files["cls"] = str(labels[primary]).encode("ascii")
    return files


class _HashingFile:
    """Write-through file wrapper that hashes what passes, so a shard is never read back to checksum it."""

    def __init__(self, f: BinaryIO):
        self.f: BinaryIO | None = f
        self.sha, self.size = hashlib.sha256(), 0

    def write(self, b) -> int:
        if self.f is None:  # discarded by an abort; tarfile's finaliser may still flush into it
            return len(b)
        self.sha.update(b)
        self.size += len(b)
        return self.f.write(b)


@dataclass
class ShardInfo:
    file: str
    split: str
    count: int
    sha256: str
    bytes: int


class ShardWriter:
    """Writes `<split>-NNNNNN.tar` files of `shard_size` samples into `directory`.

    Each shard is written as `<name>.tmp`, flushed to disk and renamed when complete: a killed run never leaves
    a partial shard under a final name. Fixed member metadata (mtime 0, fixed owner) makes equal input give
    byte-identical shards, which is what makes re-running an ingest idempotent.
    """

    def __init__(self, directory: Path, split: str, shard_size: int):
        if shard_size < 1:
            raise ValueError(f"shard_size {shard_size}: expected >= 1")
        self.directory, self.split, self.shard_size = Path(directory), split, shard_size
        self.shards: list[ShardInfo] = []
        self._file: BinaryIO | None = None
        self._tar: wds.TarWriter | None = None
        self._hash: _HashingFile | None = None
        self._count = 0

    def write(self, key: str, files: dict[str, bytes]) -> None:
        if "." in key or "/" in key or not key:
            raise ValueError(f"sample key {key!r}: expected a non-empty name without '.' or '/'")
        if self._tar is None:
            self._open()
        assert self._tar is not None
        self._tar.write({"__key__": key, **files})
        self._count += 1
        if self._count == self.shard_size:
            self._finish()

    def close(self) -> list[ShardInfo]:
        if self._tar is not None:
            self._finish()
        return self.shards

    def abort(self) -> None:
        """Drop the shard being written (its temporary file); complete shards stay."""
        if self._tar is not None and self._file is not None and self._hash is not None:
            self._hash.f = None
            self._file.close()
            Path(self._file.name).unlink(missing_ok=True)
            self._tar = self._file = self._hash = None

    def _path(self) -> Path:
        return self.directory / shard_name(self.split, len(self.shards))

    def _open(self) -> None:
        import webdataset as wds  # here, not at the top: it imports torch, which ingest workers do not need

        self.directory.mkdir(parents=True, exist_ok=True)
        self._file = open(self._path().with_name(self._path().name + TMP_SUFFIX), "wb")
        self._hash = _HashingFile(self._file)
        self._tar = wds.TarWriter(self._hash, encoder=False, mtime=0.0, user="vtp", group="vtp", mode=0o444)
        self._count = 0

    def _finish(self) -> None:
        assert self._tar is not None and self._file is not None and self._hash is not None
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        final = self._path()
        os.replace(self._file.name, final)
        self.shards.append(ShardInfo(final.name, self.split, self._count, self._hash.sha.hexdigest(),
                                     self._hash.size))
        self._tar = self._file = self._hash = None


@dataclass
class Member:
    """Where one file of a sample lies inside a tar (read it with `read_member`)."""
    tar: str
    offset: int
    size: int


def split_member_name(name: str) -> tuple[str, str] | None:
    """WebDataset's rule: the key is the path up to the first dot of the base name; the rest is the extension."""
    head, _, base = name.rpartition("/")
    if "." not in base or base.startswith("."):
        return None
    stem, ext = base.split(".", 1)
    return (f"{head}/{stem}" if head else stem), ext.lower()


def index_tar(path: Path) -> Iterator[tuple[str, dict[str, Member]]]:
    """(key, {extension: Member}) for each sample of a tar, in file order, reading headers only.

    A damaged tar raises `tarfile.TarError` (or OSError) at the point of damage, after the samples before it.
    """
    current: tuple[str, dict[str, Member]] | None = None
    with tarfile.open(path, "r:") as tf:
        for m in tf:
            if not m.isfile():
                continue
            parts = split_member_name(m.name)
            if parts is None:
                continue
            key, ext = parts
            if current is None or current[0] != key:
                if current is not None:
                    yield current
                current = (key, {})
            current[1][ext] = Member(str(path), m.offset_data, m.size)
    if current is not None:
        yield current


def read_member(m: Member) -> bytes:
    with open(m.tar, "rb") as f:
        f.seek(m.offset)
        data = f.read(m.size)
    if len(data) != m.size:
        raise OSError(f"{m.tar}: expected {m.size} bytes at offset {m.offset}, got {len(data)} (truncated tar)")
    return data


def list_shards(directory: Path, split: str) -> list[Path]:
    """The complete shards of a split, in order (temporary files of an interrupted write are ignored)."""
    return sorted(p for p in Path(directory).glob(f"{split}-*.tar") if SHARD_NAME.match(p.name))
