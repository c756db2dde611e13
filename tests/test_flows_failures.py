"""Which failures the flows retry: transient ones (a lost worker, DVC's lock, I/O), never deterministic ones."""
from __future__ import annotations

import pickle

import pytest

from flows.failures import StageFailed, classify, retry_transient

pytestmark = pytest.mark.flows

DVC = "ERROR: failed to reproduce 'pretrain@vtp': failed to run: vtp pretrain --config vtp, exited with {}"


@pytest.mark.parametrize("output, cause", [
    ("error: config 'vtp': model.patch = 15: must divide data.resolution = 32\n" + DVC.format(2),
     "configuration error"),
    ("error: NonFiniteLoss: non-finite clip loss at pretrain step 7; the last good checkpoint is kept\n"
     + DVC.format(1), "non-finite loss"),
    ("ERROR: 'pretrain@nosuch' does not exist. Stage 'pretrain@nosuch' not found", "unknown stage or configuration"),
])
def test_deterministic_failures_are_not_retried(output, cause):
    failure = classify("pretrain@vtp", 1, output)
    assert failure.cause == cause and not failure.transient


@pytest.mark.parametrize("output, code, cause", [
    ("ERROR: Unable to acquire lock. Most likely another DVC process is running", 1, "DVC lock held"),
    ("OSError: [Errno 5] Input/output error: 'runs/vtp/tokenizer'\n" + DVC.format(1), 1, "I/O error"),
    (DVC.format(-9), 1, "lost worker (killed by a signal)"),
    ("torch.distributed.DistNetworkError: Connection reset by peer\n" + DVC.format(1), 1, "lost worker"),
    ("Root Cause (first observed failure):\n  exitcode  : -9 (pid: 9276)\n"
     "Signal 9 (SIGKILL) received by PID 9276\n" + DVC.format(1), 255, "lost worker (killed by a signal)"),
    ("", -9, "killed by signal 9"),
])
def test_transient_failures_are_retried(output, code, cause):
    failure = classify("pretrain@vtp", code, output)
    assert failure.transient and failure.cause.startswith(cause)


def test_unrecognised_failure_fails_at_once_and_timeouts_retry():
    assert not classify("x", 255, "Traceback ... KeyError: 'w'\n" + DVC.format(1)).transient
    assert not classify("x", 255, "sh: 1: vtpp: not found\n" + DVC.format(127)).transient
    timeout = classify("x", -15, "", timed_out=True, timeout_s=5)
    assert timeout.transient and "timed out after 5 s" in timeout.cause


class _State:
    def __init__(self, exc):
        self.exc = exc

    def result(self, raise_on_failure=False):
        return self.exc


def test_retry_condition_reads_the_failure():
    assert retry_transient(None, None, _State(StageFailed("t", "I/O error", True)))
    assert not retry_transient(None, None, _State(StageFailed("t", "configuration error", False)))
    assert not retry_transient(None, None, _State(ValueError("not a stage failure")))
    again = pickle.loads(pickle.dumps(StageFailed("t", "I/O error", True, "line 1\nline 2")))
    assert again.transient and again.cause == "I/O error" and "line 2" in str(again)
