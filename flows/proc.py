"""Run a command in its own process group and make sure nothing it started outlives it.

Prefect cannot interrupt blocking code (PrefectHQ/prefect#15760) and its cancellation kills only the flow's own
process (#20979), so the timeout and the teardown live here: SIGTERM to the group (the trainer checkpoints; torchrun
forwards it to its workers), a grace period, then SIGKILL to every process of the tree. torchrun starts each worker
in a session of its own, so the tree is tracked by parentage (psutil), not only by process group.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

_LIVE: dict[int, "Group"] = {}  # leader pid -> group, for the flow's cancellation / crash hooks
_LIVE_LOCK = threading.Lock()


@dataclass
class Finished:
    returncode: int
    output: str  # the last lines of stdout + stderr
    seconds: float
    timed_out: bool = False


class Group:
    """A started command: its leader, and every descendant seen while it ran."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.seen: dict[int, psutil.Process] = {}
        self.track()

    def track(self) -> None:
        try:
            leader = psutil.Process(self.proc.pid)
            for p in [leader, *leader.children(recursive=True)]:
                self.seen.setdefault(p.pid, p)
        except psutil.NoSuchProcess:
            pass

    def alive(self) -> list[psutil.Process]:
        return [p for p in self.seen.values() if _running(p)]

    def stop(self, grace_s: float) -> None:
        """SIGTERM the group once (a second SIGTERM would make the trainer skip its checkpoint), wait, SIGKILL all."""
        self.track()
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and self.alive():
            self.track()  # children spawned during shutdown are killed too
            time.sleep(0.1)
        for p in self.alive():
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        psutil.wait_procs(list(self.seen.values()), timeout=5)
        self.proc.wait()


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout_s: float | None = None,
        grace_s: float = 30.0, log: Path | None = None, tail_lines: int = 200, echo=None) -> Finished:
    """Run argv (a list, never a shell string) to completion or timeout; the group is always torn down."""
    start = time.monotonic()
    tail: deque[str] = deque(maxlen=tail_lines)
    sink = open(log, "a") if log else None
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, start_new_session=True)
    group = Group(proc)
    with _LIVE_LOCK:
        _LIVE[proc.pid] = group
    reader = threading.Thread(target=_pump, args=(proc, tail, sink, echo), daemon=True)
    reader.start()
    timed_out = False
    try:
        while proc.poll() is None:
            if timeout_s is not None and time.monotonic() - start > timeout_s:
                timed_out = True
                break
            group.track()
            time.sleep(0.2)
    finally:  # timeout, cancellation (TerminationSignal), or any error in this thread: no orphans
        group.stop(grace_s)
        with _LIVE_LOCK:
            _LIVE.pop(proc.pid, None)
        reader.join(timeout=5)
        if sink:
            sink.close()
    return Finished(proc.returncode, "\n".join(tail), time.monotonic() - start, timed_out)


def _pump(proc: subprocess.Popen, tail: deque, sink, echo) -> None:
    for line in proc.stdout:
        tail.append(line.rstrip("\n"))
        if sink:
            sink.write(line)
            sink.flush()
        if echo:
            echo(line.rstrip("\n"))


def kill_all(grace_s: float = 30.0) -> int:
    """Stop every group still running in this process (the flow's on_cancellation / on_crashed hook)."""
    with _LIVE_LOCK:
        groups = list(_LIVE.values())
    threads = [threading.Thread(target=g.stop, args=(grace_s,)) for g in groups]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(groups)


@contextmanager
def no_orphans(grace_s: float = 30.0):
    """Around a flow's body: Prefect turns the runner's SIGTERM (cancellation) into an exception in the flow's main
    thread while the stage commands run in task threads, so stop them here, in the flow's own process."""
    try:
        yield
    except BaseException:
        kill_all(grace_s)
        raise
