"""`handle_signals`: a signal stops the run once, and is never lost to a finalizer."""

from __future__ import annotations

import signal
import sys
import time

import pytest
from prefect.utilities.engine import capture_sigterm

from adaptflow import interrupt


def _wait_for_the_signal(seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)


class _SignalledWhileFinalized:
    """Receives `sig` inside `__del__`, where Python drops the handler's exception."""

    def __init__(self, sig: int):
        self.sig = sig

    def __del__(self):
        signal.raise_signal(self.sig)  # the handler runs here, before raise_signal returns


def _signal_inside_a_finalizer(sig: int) -> None:
    _SignalledWhileFinalized(sig)  # dropped at once: __del__ runs as a finalizer


def test_sigterm_calls_on_stop_once_and_raises_then_restores_the_handlers():
    before = signal.getsignal(signal.SIGTERM), sys.unraisablehook
    calls = []
    with pytest.raises(interrupt.Interrupted, match="SIGTERM"):
        with interrupt.handle_signals(calls.append):
            signal.raise_signal(signal.SIGTERM)
    assert calls == ["stopped by SIGTERM"]
    assert interrupt.STOP.is_set()
    assert (signal.getsignal(signal.SIGTERM), sys.unraisablehook) == before
    interrupt.STOP.clear()


@pytest.mark.parametrize("inside_prefect", [False, True], ids=["ours", "prefect-bridge"])
def test_a_signal_that_lands_in_a_finalizer_is_sent_again(inside_prefect, capsys):
    """Our handler, or Prefect's SIGTERM bridge of a flow run, fires inside a `__del__`: Python
    drops its exception; the run must still stop (CI of stop 25: a SIGTERMed pipeline exit 0)."""
    calls = []
    with pytest.raises(interrupt.Interrupted, match="SIGTERM"):
        with interrupt.handle_signals(calls.append):
            if inside_prefect:
                with capture_sigterm():  # what a Prefect flow run has on SIGTERM
                    _signal_inside_a_finalizer(signal.SIGTERM)
                    _wait_for_the_signal()
            else:
                _signal_inside_a_finalizer(signal.SIGTERM)
                _wait_for_the_signal()
    assert calls == ["stopped by SIGTERM"]
    assert "inside a finalizer" in capsys.readouterr().err
    interrupt.STOP.clear()
