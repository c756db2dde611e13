"""Which stage failures are worth a retry.

Transient: a lost worker (killed by a signal, a broken rendezvous or connection), DVC's repository lock held by
another process, an I/O error, our own timeout (a retry resumes from the last checkpoint). Deterministic: a
configuration error (`vtp` exits 2 naming the field), a non-finite loss, a stage DVC does not know. Anything
unrecognised is not retried: it fails at once with its output, for a person to read.
"""
from __future__ import annotations

import re

DETERMINISTIC = [
    (re.compile(r"exited with 2\b|^error: (--config|config) ", re.M), "configuration error"),
    (re.compile(r"non-finite \w+ loss|NonFiniteLoss"), "non-finite loss"),
    (re.compile(r"is not a valid stage|stage '.*' not found|Unknown configuration|unknown configuration", re.I),
     "unknown stage or configuration"),
]
TRANSIENT = [
    (re.compile(r"Unable to acquire lock"), "DVC lock held by another process"),
    (re.compile(r"Input/output error|\[Errno 5\]|Stale file handle|No space left", re.I), "I/O error"),
    # DVC reports a child killed by signal N as "exited with -N" (a shell as 128 + N); torchrun names the signal.
    (re.compile(r"exited with (-\d+|129|13\d|14[0-3])\b|Signal \d+ \(SIG\w+\) received|Signals\.SIG\w+"),
     "lost worker (killed by a signal)"),
    (re.compile(r"RendezvousTimeoutError|RendezvousClosedError|Connection (reset|refused)|NCCL error|"
                r"DistNetworkError|socket timed out", re.I), "lost worker (rendezvous or network)"),
]


class StageFailed(RuntimeError):
    """A stage's command failed; `transient` says whether a retry may succeed, `cause` names why."""

    def __init__(self, target: str, cause: str, transient: bool, output: str = ""):
        self.target, self.cause, self.transient = target, cause, transient
        self.output = "\n".join(output.strip().splitlines()[-15:])
        super().__init__(f"{target}: {cause}{' (transient)' if transient else ''}\n{self.output}")

    def __reduce__(self):  # picklable for Prefect's result handling
        return (type(self), (self.target, self.cause, self.transient, self.output))


def classify(target: str, returncode: int, output: str, timed_out: bool = False,
             timeout_s: float | None = None) -> StageFailed:
    if timed_out:
        return StageFailed(target, f"timed out after {timeout_s:g} s; process group stopped", True, output)
    for pattern, cause in DETERMINISTIC:
        if pattern.search(output):
            return StageFailed(target, cause, False, output)
    for pattern, cause in TRANSIENT:
        if pattern.search(output):
            return StageFailed(target, cause, True, output)
    if returncode < 0:  # the dvc process itself was killed (DVC's own errors exit 255)
        return StageFailed(target, f"killed by signal {abs(returncode) % 128}", True, output)
    return StageFailed(target, f"failed with exit code {returncode}", False, output)


def retry_transient(task, task_run, state) -> bool:
    """Prefect `retry_condition_fn`: retry a StageFailed only when it is transient; anything else fails at once."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - an unreadable result is not a reason to retry
        return False
    return isinstance(exc, StageFailed) and exc.transient
