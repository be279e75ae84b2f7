"""`handle_signals`: a signal stops the run once, and is never lost to a finalizer."""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from types import SimpleNamespace

import pytest
from prefect.exceptions import TerminationSignal
from prefect.utilities.engine import capture_sigterm

from adaptflow import interrupt


@pytest.fixture(autouse=True)
def unstopped():
    """Each test starts and ends with no stop asked for, whatever it asserted."""
    interrupt.STOP.clear()
    yield
    interrupt.STOP.clear()


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


def _dropped(e: BaseException) -> SimpleNamespace:
    """What Python hands `sys.unraisablehook` for an exception a finalizer dropped."""
    return SimpleNamespace(exc_type=type(e), exc_value=e, exc_traceback=None, err_msg=None,
                           object="a finalizer")  # fmt: skip


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_calls_on_stop_once_and_raises_then_everything_is_restored(sig):
    before = signal.getsignal(sig), sys.unraisablehook
    calls = []
    name = signal.Signals(sig).name
    with pytest.raises(interrupt.Interrupted, match=name) as raised:
        with interrupt.handle_signals(calls.append):
            signal.raise_signal(sig)
    assert raised.value.signal == sig
    assert calls == [f"stopped by {name}"]
    assert interrupt.STOP.is_set()
    assert (signal.getsignal(sig), sys.unraisablehook) == before


@pytest.mark.parametrize("inside_prefect", [False, True], ids=["ours", "prefect-bridge"])
def test_a_signal_that_lands_in_a_finalizer_is_sent_again(inside_prefect, capsys):
    """Our handler, or Prefect's SIGTERM bridge of a flow run, fires inside a `__del__`: Python
    drops its exception; the run must still stop (CI of stop 25: a SIGTERMed pipeline exit 0)."""
    calls = []
    with pytest.raises(interrupt.Interrupted, match="SIGTERM"):
        with interrupt.handle_signals(calls.append):
            with capture_sigterm() if inside_prefect else contextlib.nullcontext():
                _signal_inside_a_finalizer(signal.SIGTERM)
                _wait_for_the_signal()
    assert calls == ["stopped by SIGTERM"]
    assert "inside a finalizer" in capsys.readouterr().err


def test_the_scheduler_gets_a_keyboard_interrupt_and_a_dropped_sigterm_is_sent_again(capsys):
    """`flows.schedule serve` stops Prefect's way (KeyboardInterrupt) on SIGTERM too, and a
    SIGTERM dropped in a finalizer is sent again as SIGTERM (not as Ctrl-C's SIGINT)."""
    sent = []
    real_kill = interrupt.os.kill

    def kill(pid, sig):
        sent.append(sig)
        real_kill(pid, sig)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(interrupt.os, "kill", kill)
        with pytest.raises(KeyboardInterrupt, match="SIGTERM") as raised:
            with interrupt.handle_signals(lambda why: None, raise_as=KeyboardInterrupt):
                _signal_inside_a_finalizer(signal.SIGTERM)
                _wait_for_the_signal()
    assert not isinstance(raised.value, interrupt.Interrupted)
    assert raised.value.signal == signal.SIGTERM and sent == [signal.SIGTERM]
    assert "SIGTERM arrived inside a finalizer" in capsys.readouterr().err


def test_a_resend_never_outlives_the_context_but_its_stop_stands():
    """The flow returns within the resend's delay: no signal after the context (it would meet
    the default handler), and the stop is not lost either: STOP is set, on_stop called."""
    calls, after = [], []
    with interrupt.handle_signals(calls.append):
        sys.unraisablehook(_dropped(TerminationSignal(signal=signal.SIGTERM)))
    previous = signal.signal(signal.SIGTERM, lambda *a: after.append(a))
    try:
        time.sleep(5 * interrupt._Resender.DELAY)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert after == []
    assert interrupt.STOP.is_set() and calls == ["stopped by SIGTERM"]


def test_any_other_dropped_exception_goes_to_the_previous_hook(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    with interrupt.handle_signals(lambda why: None):
        sys.unraisablehook(_dropped(ValueError("not a signal")))
    assert [type(u.exc_value) for u in seen] == [ValueError]
    assert not interrupt.STOP.is_set()


def test_the_cli_exits_143_when_the_flow_ends_with_a_signal_still_pending(
    project, prepared_mnist, monkeypatch
):
    """`adaptflow run` whose flow returns right after a SIGTERM was dropped: exit 143, not 0."""
    import flows.pipeline
    from typer.testing import CliRunner

    from adaptflow.cli import app

    def flow(*args):
        sys.unraisablehook(_dropped(TerminationSignal(signal=signal.SIGTERM)))
        return {}

    monkeypatch.setattr(flows.pipeline, "pipeline_flow", flow)
    monkeypatch.setattr(flows.pipeline, "ephemeral_prefect", contextlib.nullcontext)
    args = ["run", "--stage", "ae", "--set", f"data.prepared_dir={prepared_mnist}"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 143, out.output
    assert "stopped by SIGTERM" in " ".join(out.output.split())
