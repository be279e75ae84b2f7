"""Which failures a stage task may retry: transient ones only (params `retries`).

A retry is worth it when the same call can succeed a minute later: the tracking server or its
database was unreachable or busy (`database is locked` on a shared sqlite store, a dropped
connection, an MLflow server answering TEMPORARILY_UNAVAILABLE, or 5xx/429 until MLflow's own HTTP
retries gave up). Everything else fails the same way again, so it is
never retried: bad params, bad or missing data, a NaN loss, a bad checkpoint, a bug. The rule is
an allow-list: an error is transient only when it (or an error it was raised from) is one of
the kinds above.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

# MLflow's error codes of a server that may answer later (mlflow.protos.databricks_pb2 names;
# not INTERNAL_ERROR: it is every MlflowException's default code, bugs included)
TRANSIENT_MLFLOW_CODES = frozenset({"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"})
# the HTTP answers MLflow's REST client may give up on that a server gives when busy or between
# restarts ("too many 503 error responses"); not 500: a server-side bug or broken store says 500
TRANSIENT_HTTP = ("429", "502", "503", "504")
# what a busy or unreachable database says through SQLAlchemy / MLflow's wrapping of it
TRANSIENT_DB_TEXT = (
    "database is locked",
    "database is busy",
    "could not connect to server",
    "connection refused",
    "server closed the connection unexpectedly",
    "connection reset",
    # PostgreSQL restarting or failing over (a team tracking server's database)
    "terminating connection due to administrator command",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _is_db_error(exc: BaseException) -> bool:
    """A database's own OperationalError (sqlite3's, or SQLAlchemy's wrapping any driver's)."""
    kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
    return isinstance(exc, sqlite3.OperationalError) or (
        kind.startswith("sqlalchemy.exc.") and "OperationalError" in kind
    )


def _db_text_is_transient(exc: BaseException) -> bool:
    text = str(exc).lower()
    return any(t in text for t in TRANSIENT_DB_TEXT)


def _one_is_transient(exc: BaseException) -> bool:
    """One error of the chain (database errors are decided in `is_transient`)."""
    if isinstance(exc, ConnectionError | TimeoutError):  # builtins: refused, reset, timed out
        return True
    try:  # requests' errors are not the builtins (MLflow's REST client raises them)
        import requests

        # RetryError: MLflow's HTTP client gave up after "too many 5xx/429 error responses"
        if isinstance(
            exc, requests.ConnectionError | requests.Timeout | requests.exceptions.RetryError
        ):
            return True
    except ImportError:  # pragma: no cover - mlflow depends on requests
        pass
    kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
    if kind.startswith("mlflow.exceptions."):
        text = str(exc).lower()
        if "operationalerror" in text:  # a database error as text (e.g. from a server): the
            return _db_text_is_transient(exc)  # database's message decides, not MLflow's code
        gave_up = any(f"too many {code} error responses" in text for code in TRANSIENT_HTTP)
        return getattr(exc, "error_code", "") in TRANSIENT_MLFLOW_CODES or gave_up
    return False


def is_transient(exc: BaseException) -> bool:
    """True when `exc`, or an error in its cause chain, is a transient failure (see above).
    A deterministic error anywhere in the chain (params, data, a NaN loss) wins: no retry."""
    from adaptflow.config import ParamsError
    from adaptflow.data import DataError
    from adaptflow.training.trainer import NonFiniteLossError

    chain = list(_chain(exc))
    if any(isinstance(e, ParamsError | DataError | NonFiniteLossError) for e in chain):
        return False
    db = [e for e in chain if _is_db_error(e)]
    if db:  # MLflow reports every database OperationalError as TEMPORARILY_UNAVAILABLE, even
        # "no such table" or a read-only file: the database's own message decides
        return any(_db_text_is_transient(e) for e in db)
    return any(_one_is_transient(e) for e in chain)


def retry_transient(task, task_run, state) -> bool:
    """Prefect's `retry_condition_fn`: retry the failed task run only on a transient error."""
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, BaseException) and is_transient(exc)


P = ParamSpec("P")
R = TypeVar("R")
# per call: a busy store usually frees within seconds (MLflow's sqlite sessions already wait
# up to 20 s each); these waits come on top of that, 0.5 + 1 + 2 + 4 s, before giving up
CALL_ATTEMPTS = 5
CALL_FIRST_DELAY = 0.5


def per_call(
    fn: Callable[P, R] | None = None, *, recover: Callable[P, R | None] | None = None
) -> Callable[P, R]:
    """Retry one tracking/registry call on a transient error (`is_transient`: e.g. `database is
    locked` when two pipelines share one sqlite store), so a busy moment costs a wait, not the
    stage. Only for calls that are safe to repeat: a refused write was rolled back whole (MLflow
    commits a session at its end), and what a partly done call wrote is rewritten the same.

    `recover(*args, **kwargs)`, for a call that may have taken effect before it was refused
    (e.g. a registration: a second try would make a second version), is asked after each wait
    and once more before giving up: what it returns (not None) is the call's result; None means
    "not done", and only then is the call tried again. A transient error in `recover` leaves it
    unknown whether the call took effect, so the call is not repeated: the next wait ends in
    `recover` again (and giving up raises the call's refusal); any other error is raised. Use
    as `@per_call` or `@per_call(recover=...)`."""
    if fn is None:
        return functools.partial(per_call, recover=recover)  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        may_call = True  # False while it is unknown whether a refused call took effect
        for attempt in range(CALL_ATTEMPTS):
            if may_call:
                try:
                    return fn(*args, **kwargs)
                except Exception as e:
                    if not is_transient(e):
                        raise
                    error = e
            # outside the `except`: an error in `recover` must not chain to (and so be judged
            # by) the refusal
            last = attempt == CALL_ATTEMPTS - 1
            if not last:
                delay = CALL_FIRST_DELAY * 2**attempt
                logging.getLogger(__name__).warning(
                    "%s: %s; waiting %.1f s (%d/%d)",
                    fn.__qualname__,
                    str(error).splitlines()[0][:200],
                    delay,
                    attempt + 1,
                    CALL_ATTEMPTS - 1,
                )
                time.sleep(delay)
            if recover is None:
                continue
            try:
                done = recover(*args, **kwargs)
            except Exception as e:
                if not is_transient(e):
                    raise
                may_call = False  # the lookup was refused too: never repeat the call blind
                continue
            if done is not None:
                return done
            may_call = True
        raise error

    return wrapper
