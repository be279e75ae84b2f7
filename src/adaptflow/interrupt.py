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
active, such a dropped exception sends the same signal again from outside the finalizer. (A
handler's exception that library code catches with `except BaseException` and does not re-raise
is still lost; `STOP`, set before our handler raises, is then what ends the run.)
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

    signal: int | None = None  # the signal, when raised by the handler itself


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
    prefect = sys.modules.get("prefect.exceptions")  # not loaded: none of its exceptions exist
    kinds = (Interrupted, prefect.TerminationSignal) if prefect is not None else (Interrupted,)
    sig = getattr(e, "signal", None)  # ours (`stop`) and TerminationSignal carry it
    if isinstance(e, kinds):
        return sig if isinstance(sig, int) else signal.SIGTERM
    if isinstance(e, KeyboardInterrupt):  # Ctrl-C, or `handle_signals(raise_as=...)`'s
        return sig if isinstance(sig, int) else signal.SIGINT
    return None


class _Resender:
    """The `sys.unraisablehook` of `handle_signals`: a signal handler's exception dropped in a
    finalizer sends its signal again, a moment later from another thread (by then the finalizer
    has returned); any other exception goes to the previous hook. A resend never outlives the
    context: `close()` cancels what is pending and returns the signals that were dropped and
    not delivered again, for the context to act on."""

    DELAY = 0.05  # seconds: the finalizer returns long before
    LIMIT = 5  # resends per context, should every one land in a finalizer again

    def __init__(self, previous: Callable):
        self.previous = previous
        self.lock = threading.RLock()  # re-entered if a finalizer runs inside a hold
        self.active = True
        self.pending: dict[threading.Timer, int] = {}
        self.sent = 0

    def __call__(self, unraisable) -> None:
        sig = _signal_of(unraisable.exc_value)
        if sig is None:
            self.previous(unraisable)
            return
        with self.lock:
            if not self.active or self.sent >= self.LIMIT:
                return
            self.sent += 1
            timer = threading.Timer(self.DELAY, self._send, (sig,))
            timer.daemon = True
            self.pending[timer] = sig
            timer.start()
        try:
            print(
                f"adaptflow: {signal.Signals(sig).name} arrived inside a finalizer "
                f"({unraisable.object!r}), which drops its exception: sending it again",
                file=sys.stderr,
            )
        except Exception:  # noqa: BLE001, S110 — a closed stderr must not cost the resend
            pass

    def _send(self, sig: int) -> None:
        with self.lock:
            self.pending.pop(threading.current_thread(), None)  # type: ignore[call-overload]
            if self.active:  # the handlers are still ours: the main thread takes it at once
                os.kill(os.getpid(), sig)

    def close(self) -> list[int]:
        with self.lock:
            self.active = False
            for timer in self.pending:
                timer.cancel()
            undelivered, self.pending = list(self.pending.values()), {}
        return undelivered


@contextmanager
def handle_signals(
    on_stop: Callable[[str], None], raise_as: type[BaseException] = Interrupted
) -> Iterator[None]:
    """SIGTERM and SIGINT set `STOP`, call `on_stop(reason)` once (the first signal), and
    raise `raise_as` (`Interrupted`; the scheduler: KeyboardInterrupt, Prefect's way to stop
    serving) in the main thread; a handler's exception that a finalizer dropped sends its
    signal again (`_Resender`). Main thread only; all restored on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    STOP.clear()  # a new run in the same process (tests, a scheduler) starts unstopped
    _reason.clear()

    def stopped(signum: int) -> None:
        if not STOP.is_set():  # the first signal
            _reason.append(f"stopped by {signal.Signals(signum).name}")
            STOP.set()
            on_stop(reason())

    def stop(signum, frame):
        stopped(signum)
        e = raise_as(reason())
        e.signal = signum  # type: ignore[attr-defined]
        raise e

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    resender = _Resender(sys.unraisablehook)
    previous_hook, sys.unraisablehook = sys.unraisablehook, resender
    try:
        yield
    finally:
        try:
            # a signal whose resend is still pending stops the run all the same (STOP is what
            # `adaptflow run` checks after the flow), never by a default handler after this
            for sig in resender.close():
                stopped(sig)
        finally:  # restored even when a signal lands right here
            for s, handler in previous.items():
                signal.signal(s, handler)
            sys.unraisablehook = previous_hook
