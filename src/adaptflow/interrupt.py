"""A pipeline stopped by a signal leaves no run RUNNING.

`adaptflow run` installs `handle_signals()`: on SIGTERM (or SIGINT, Ctrl-C) every MLflow run
this process has open is ended KILLED at once, with the signal as its `adaptflow.error` tag
(so a SIGKILL that follows finds nothing to fix), then the main thread unwinds and units in
worker threads stop at their next training step (`check`). Nothing half-done is reused: the
cache only takes FINISHED runs. What a SIGKILL (or a power cut) leaves RUNNING is ended KILLED
by the next pipeline on this host (`tracking.runs.reap_stale_runs`).
"""

from __future__ import annotations

import signal
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


@contextmanager
def handle_signals(on_stop: Callable[[str], None]) -> Iterator[None]:
    """SIGTERM and SIGINT set `STOP`, call `on_stop(reason)` once (the first signal), and
    raise `Interrupted` in the main thread. Main thread only; handlers restored on exit."""
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
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
