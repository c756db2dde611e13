"""`manifest.json`: what an ingest wrote (counts per split and class, caption lengths, shards with checksums, one
content hash) and everything it skipped, with reasons. It holds no timestamps: equal input gives an equal file.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np

from vtp.data.shards import ShardInfo
from vtp.data.sources import Skipped
from vtp.fileio import write_bytes_atomic

FORMAT_VERSION = 1
SPLITS = ("train", "val")


class Tally:
    """Running counts of what was written, per split."""

    def __init__(self, label_sets: dict[str, list[str]]):
        self.label_sets = label_sets
        self.count = Counter[str]()
        self.classes = {s: {k: Counter[int]() for k in label_sets} for s in SPLITS}
        self.words: list[int] = []
        self.chars: list[int] = []

    def add(self, split: str, caption: str, labels: dict[str, int]) -> None:
        self.count[split] += 1
        for k, v in labels.items():
            self.classes[split][k][v] += 1
        self.words.append(len(caption.split()))
        self.chars.append(len(caption))

    def splits(self) -> dict[str, dict]:
        return {s: {"count": self.count[s],
                    "classes": {k: {name: self.classes[s][k][i] for i, name in enumerate(names)}
                                for k, names in self.label_sets.items()}}
                for s in SPLITS}


def _lengths(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    a = np.asarray(values)
    return {"min": int(a.min()), "mean": round(float(a.mean()), 2), "p50": float(np.percentile(a, 50)),
            "p95": float(np.percentile(a, 95)), "max": int(a.max())}


def content_hash(shards: list[ShardInfo]) -> str:
    """SHA-256 over the shard names and their SHA-256s: equal iff the stored samples are byte-identical."""
    h = hashlib.sha256()
    for s in sorted(shards, key=lambda s: s.file):
        h.update(f"{s.file} {s.sha256}\n".encode())
    return "sha256:" + h.hexdigest()


def build(*, name: str, source: str, source_path: str | None, resolution: int, image_format: str,
          label_sets: dict[str, list[str]], primary_label: str | None, tally: Tally, shards: list[ShardInfo],
          skipped: list[Skipped], inputs: int, extra: dict) -> dict:
    reasons = Counter(s.reason for s in skipped)
    return {
        "format_version": FORMAT_VERSION, "name": name, "source": source, "source_path": source_path,
        "resolution": resolution, "image_format": image_format,
        "inputs": inputs, "samples": sum(tally.count.values()),
        "splits": tally.splits(), "label_sets": label_sets, "primary_label": primary_label,
        "caption_length": {"words": _lengths(tally.words), "characters": _lengths(tally.chars)},
        "content_hash": content_hash(shards), "shards": [asdict(s) for s in shards],
        "skipped_count": len(skipped), "skipped_by_reason": dict(sorted(reasons.items())),
        "skipped": [asdict(s) for s in skipped], **extra,
    }


def write(manifest: dict, directory: Path) -> Path:
    path = Path(directory) / "manifest.json"
    return write_bytes_atomic(path, (json.dumps(manifest, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))


def read(directory: Path) -> dict:
    return json.loads((Path(directory) / "manifest.json").read_text(encoding="utf-8"))
