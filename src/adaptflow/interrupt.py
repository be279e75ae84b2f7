"""A pipeline stopped by a signal leaves no run RUNNING.

`adaptflow run` installs `handle_signals()`: on SIGTERM (or SIGINT, Ctrl-C) every MLflow run
this process has open is ended KILLED at once, with the signal as its `adaptflow.error` tag
(so a SIGKILL that follows finds nothing to fix), then the main thread unwinds and units in
worker threads stop at their next training step (`check`). Nothing half-done is reused: the
cache only takes FINISHED runs. What a SIGKILL (or a power cut) leaves RUNNING is ended KILLED
by the next pipeline on this host (`tracking.runs.reap_stale_runs`).

A signal is never lost to a finalizer: Python runs a signal handler wherever the main thread is,
and when that is a `__del__` or a weakref callback (SQLAlchemy has many), the handler's exception
(ours, or the `TerminationSignal` of the bridge Prefect installs during a flow run) is printed
as "Exception ignored in ..." and dropped, so the process would go on as if never signalled
(the CI of stop 25 saw a SIGTERMed pipeline finish with exit 0). While `handle_signals` is
active, such a dropped exception sends the same signal again from outside the finalizer.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STOP = threading.Event()
_reason: list[str] = []


class Interrupted(BaseException):  # noqa: N818 — like KeyboardInterrupt: not an Exception
    """The process was asked to stop; raised where long work checks `STOP`."""


def reason() -> str:
    return _reason[0] if _reason else "stopped"


def describe(e: BaseException) -> str:
    """Why a stopped run stopped, for its `adaptflow.error` tag: the signal when known (ours,
    or the one Prefect's TerminationSignal carries)."""
    sig = getattr(e, "signal", None)
    if isinstance(sig, int):
        return f"stopped by {signal.Signals(sig).name} ({type(e).__name__})"
    if STOP.is_set():
        return f"{reason()} ({type(e).__name__})"
    return f"stopped ({type(e).__name__}{': ' + str(e) if str(e) else ''})"


def check() -> None:
    """Raise `Interrupted` once a stop was asked for (cheap: call it per training step)."""
    if STOP.is_set():
        raise Interrupted(reason())


def _signal_of(e: BaseException | None) -> int | None:
    """The signal a signal handler's exception stands for; None for any other exception."""
    if isinstance(e, Interrupted):
        return signal.SIGINT if "SIGINT" in str(e) else signal.SIGTERM
    if isinstance(e, KeyboardInterrupt):
        return signal.SIGINT
    sig = getattr(e, "signal", None)  # prefect.exceptions.TerminationSignal
    return sig if isinstance(sig, int) and type(e).__name__ == "TerminationSignal" else None


def _resend_dropped(previous: Callable) -> Callable:
    """A `sys.unraisablehook`: a signal handler's exception dropped in a finalizer sends its
    signal again, a moment later from another thread (by then the finalizer has returned);
    any other exception goes to `previous`."""

    def hook(unraisable) -> None:
        sig = _signal_of(unraisable.exc_value)
        if sig is None:
            previous(unraisable)
            return
        print(
            f"adaptflow: {signal.Signals(sig).name} arrived inside a finalizer "
            f"({unraisable.object!r}), which drops its exception: sending it again",
            file=sys.stderr,
        )
        resend = threading.Timer(0.05, os.kill, (os.getpid(), sig))
        resend.daemon = True
        resend.start()

    return hook


@contextmanager
def handle_signals(on_stop: Callable[[str], None]) -> Iterator[None]:
    """SIGTERM and SIGINT set `STOP`, call `on_stop(reason)` once (the first signal), and
    raise `Interrupted` in the main thread; a handler's exception that a finalizer dropped
    sends its signal again (`_resend_dropped`). Main thread only; all restored on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    STOP.clear()  # a new run in the same process (tests, a scheduler) starts unstopped
    _reason.clear()

    def stop(signum, frame):
        first = not STOP.is_set()
        if first:
            _reason.append(f"stopped by {signal.Signals(signum).name}")
            STOP.set()
            on_stop(reason())
        raise Interrupted(reason())

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    previous_hook, sys.unraisablehook = sys.unraisablehook, _resend_dropped(sys.unraisablehook)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sys.unraisablehook = previous_hook
