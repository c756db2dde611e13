"""Explorer speed: the runs overview's load time with 100 synthetic configurations, against a bare pandas read of
the same JSON files, measured in the same run, interleaved, best of several (ratios, not absolute claims).

1. Cold overview: `app.overview.overview` (every stage's state, E, FLOPs, metrics) vs json.load + pd.json_normalize
   of the files it reads (run.json, metrics.json, config.json, dvclive/metrics.json of every stage).
2. Warm rerun: the cache key (`app.data.signature`, a stat per file) that decides whether the cached overview is
   still valid, vs the same bare read.

Run: `python benchmarks/bench_app.py` from the repository root (a few seconds).
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the fake-project builder the explorer's tests use

from fixtures_app.build import write_config  # noqa: E402

from app import data, overview  # noqa: E402

N_CONFIGS, REPEATS = 100, 7


def build(root: Path) -> Path:
    runs = root / "runs"
    for i in range(N_CONFIGS):
        write_config(runs, f"cfg{i:03d}", objectives=("rec",) if i % 2 else ("clip", "ssl", "rec"),
                     dim=16 * (1 + i % 4), flops=1e12 * (1 + i), quality=(i % 10) / 10, params=1_000_000 * (1 + i))
    (root / "params.yaml").write_text(json.dumps({"configs": {f"cfg{i:03d}": {} for i in range(N_CONFIGS)}}))
    return runs


def bare_read(runs: Path) -> pd.DataFrame:
    """The reference: read the same JSON files into one flat row per configuration, nothing more."""
    rows = []
    for cdir in sorted(p for p in runs.iterdir() if p.is_dir()):
        row: dict = {"config": cdir.name}
        for stage in data.STAGES:
            for name in ("run.json", "metrics.json", "config.json", "dvclive/metrics.json"):
                path = cdir / stage / name
                if path.is_file():
                    row[f"{stage}/{name}"] = json.loads(path.read_text())
        rows.append(row)
    return pd.json_normalize(rows)


def best_interleaved(fns: dict, repeats: int) -> dict[str, float]:
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():  # interleaved: a noisy neighbour slows both sides alike
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        runs = build(Path(tmp))
        params = Path(tmp) / "params.yaml"
        frame = overview.overview(runs, params)
        assert len(frame) == N_CONFIGS and (frame["status"] == "finished").all(), frame["status"].value_counts()
        t = best_interleaved({"overview": lambda: overview.overview(runs, params), "bare": lambda: bare_read(runs),
                              "signature": lambda: data.signature(runs, (params,))}, REPEATS)
    print(f"explorer overview, {N_CONFIGS} configurations (best of {REPEATS}, interleaved)")
    print(f"  bare pandas read of the same JSON files: {t['bare'] * 1e3:8.1f} ms")
    print(f"  app.overview.overview (cold):           {t['overview'] * 1e3:8.1f} ms   "
          f"ratio {t['overview'] / t['bare']:.2f}x the bare read")
    print(f"  cache key on a warm rerun (signature):  {t['signature'] * 1e3:8.1f} ms   "
          f"ratio {t['signature'] / t['bare']:.2f}x the bare read")


if __name__ == "__main__":
    main()
