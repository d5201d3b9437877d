"""``m3 train``'s stop handling: Ctrl-C or SIGTERM stops after the step (SIGTERM never aborts;
a second Ctrl-C does), and the previous handlers come back."""

from __future__ import annotations

import os
import signal

import pytest

from m3_core.cli.progress import stop_on_sigint


def test_sigterm_and_ctrl_c_stop_gracefully_and_handlers_are_restored():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with stop_on_sigint() as should_stop:
        assert not should_stop()
        os.kill(os.getpid(), signal.SIGTERM)
        assert should_stop()
        os.kill(os.getpid(), signal.SIGTERM)  # torchrun may repeat it: still no abort
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C aborts
    assert {s: signal.getsignal(s) for s in before} == before
