"""dvclive on rank 0 only; other ranks get no-ops. Steps are set explicitly so a resumed run overwrites nothing
and continues its curves."""
from __future__ import annotations

import math
from pathlib import Path


class Live:
    def __init__(self, out_dir: Path, resume: bool, enabled: bool):
        self.live = None
        if enabled:
            from dvclive import Live as DvcLive

            try:
                self.live = DvcLive(dir=str(out_dir), resume=resume, save_dvc_exp=False, dvcyaml=None,
                                    report=None)
            except Exception as e:  # dvclive reads the git HEAD and fails in a repository without commits
                if "Empty git repo" in str(e):
                    raise RuntimeError("dvclive needs at least one commit in this git repository: "
                                       "`git commit` once, then re-run") from e
                raise

    def log(self, step: int, values: dict[str, float]) -> None:
        if self.live is None:
            return
        self.live.step = step
        for k, v in values.items():
            if v is not None and math.isfinite(v):
                self.live.log_metric(k, v)
        self.live.next_step()

    def log_image(self, name: str, path: Path) -> None:
        if self.live is not None:
            self.live.log_image(name, str(path))

    def close(self) -> None:
        if self.live is not None:
            self.live.end()
