"""Stage tasks retry transient failures (params `retries`), never deterministic ones."""

from __future__ import annotations

import sqlite3

import pytest
import requests
import sqlalchemy.exc
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE

from adaptflow.config import ParamsError, load_params
from adaptflow.data import DataError, prepare_all
from adaptflow.retry import is_transient
from adaptflow.training.trainer import NonFiniteLossError


def raised_from(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as e:
            raise outer from e
    except BaseException as e:
        return e


def db_error(text: str) -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("INSERT", {}, sqlite3.OperationalError(text))


def locked() -> sqlalchemy.exc.OperationalError:
    return db_error("database is locked")


def as_mlflow_raises(e: sqlalchemy.exc.OperationalError) -> MlflowException:
    """How MLflow's sqlalchemy store reports any OperationalError (mlflow/store/db/utils.py):
    TEMPORARILY_UNAVAILABLE, raised from the database's error."""
    return raised_from(MlflowException(message=e, error_code=TEMPORARILY_UNAVAILABLE), e)


def gave_up() -> MlflowException:
    """MLflow's REST client after its own retries: INTERNAL_ERROR over requests' RetryError."""
    import requests

    inner = requests.exceptions.RetryError("too many 503 error responses")
    return raised_from(MlflowException("API request failed: too many 503 error responses"), inner)


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ConnectionRefusedError("[Errno 111] Connection refused"), True),
        (TimeoutError("timed out"), True),
        (requests.ConnectionError("Max retries exceeded"), True),
        (requests.Timeout("read timed out"), True),
        (sqlite3.OperationalError("database is locked"), True),
        (locked(), True),
        (MlflowException(f"(sqlite3.OperationalError) database is locked {locked()}"), True),
        (MlflowException("busy", error_code=TEMPORARILY_UNAVAILABLE), True),
        (raised_from(RuntimeError("logging failed"), ConnectionResetError()), True),
        (as_mlflow_raises(locked()), True),
        (gave_up(), True),
        (MlflowException("API request failed: too many 429 error responses"), True),
        # a server whose own database broke, as text: the database's message decides
        (
            MlflowException(
                "(psycopg2.OperationalError) could not connect to server: Connection refused",
                error_code=TEMPORARILY_UNAVAILABLE,
            ),
            True,
        ),
        (
            MlflowException(
                "(sqlite3.OperationalError) no such table: runs", error_code=TEMPORARILY_UNAVAILABLE
            ),
            False,
        ),
        # 500: a bug or a broken store behind the server, not worth a retry
        (MlflowException("API request failed: too many 500 error responses"), False),
        # MLflow's TEMPORARILY_UNAVAILABLE over a database error that will not go away
        (as_mlflow_raises(db_error("no such table: runs")), False),
        (as_mlflow_raises(db_error("attempt to write a readonly database")), False),
        (as_mlflow_raises(db_error("unable to open database file")), False),
        # deterministic: the same call fails the same way again
        (sqlite3.OperationalError("no such table: runs"), False),
        (MlflowException("bad param", error_code=INVALID_PARAMETER_VALUE), False),
        (MlflowException("a bug in a plugin"), False),  # INTERNAL_ERROR, the default code
        (ParamsError("ae.epochs = -1"), False),
        (DataError("data/prepared/mnist.npz: digest mismatch"), False),
        (NonFiniteLossError("loss is nan at step 3"), False),
        (FileNotFoundError("params.yaml"), False),
        (ValueError("shapes do not match"), False),
        (RuntimeError("CUDA error: an illegal memory access"), False),
        # a NaN loss that also broke a connection on the way out is still a NaN loss
        (raised_from(ConnectionError("lost"), NonFiniteLossError("nan")), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_only_transient_errors_are_retried(exc, transient):
    assert is_transient(exc) is transient


@pytest.fixture
def stage_project(project, harness):
    prepare_all(load_params("params.yaml"), ["mnist"], log=lambda m: None)
    return project


class Done:
    def to_dict(self) -> dict:
        return {"ok": True}


def flaky_execute(monkeypatch, errors: list[BaseException]) -> list[int]:
    """`adaptflow.stages.execute` raising `errors` in turn, then succeeding; returns the calls."""
    import adaptflow.stages

    calls: list[int] = []

    def execute(stage, params, ctx):
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return Done()

    monkeypatch.setattr(adaptflow.stages, "execute", execute)
    return calls


def run_ae(overrides: list[str]):
    from flows.ae import ae_flow

    return ae_flow("params.yaml", overrides, ".", None, False, False, {}, {})


def test_a_transient_failure_is_retried_until_it_succeeds(stage_project, monkeypatch):
    calls = flaky_execute(monkeypatch, [locked(), ConnectionRefusedError("refused")])
    assert run_ae(["retries.count=2", "retries.delay_seconds=0"]) == {"ok": True}
    assert len(calls) == 3


def test_retries_stop_at_the_count(stage_project, monkeypatch):
    calls = flaky_execute(monkeypatch, [ConnectionRefusedError("refused")] * 5)
    with pytest.raises(ConnectionRefusedError):
        run_ae(["retries.count=1", "retries.delay_seconds=0"])
    assert len(calls) == 2


@pytest.mark.parametrize(
    "error", [NonFiniteLossError("loss is nan at step 3"), ParamsError("ae.lr"), ValueError("bug")]
)
def test_a_deterministic_failure_is_not_retried(stage_project, monkeypatch, error):
    calls = flaky_execute(monkeypatch, [error])
    with pytest.raises(type(error)):
        run_ae(["retries.count=3", "retries.delay_seconds=0"])
    assert len(calls) == 1


def _flaky(errors: list[BaseException]):
    calls = []

    def call(x):
        calls.append(x)
        if errors:
            raise errors.pop(0)
        return x * 2

    return call, calls


def test_one_call_is_retried_on_a_locked_store_and_waits_longer_each_time(monkeypatch):
    """Two pipelines on one sqlite store: `database is locked` costs a wait, not the stage."""
    from adaptflow import retry

    waits = []
    monkeypatch.setattr(retry.time, "sleep", waits.append)
    locked = MlflowException(
        "(sqlite3.OperationalError) database is locked", TEMPORARILY_UNAVAILABLE
    )
    call, calls = _flaky(
        [db_error("database is locked"), raised_from(locked, db_error("database is locked"))]
    )
    assert retry.per_call(call)(21) == 42
    assert calls == [21, 21, 21] and waits == [0.5, 1.0]


def test_one_call_gives_up_after_its_attempts_and_never_retries_a_real_error(monkeypatch):
    from adaptflow import retry

    monkeypatch.setattr(retry.time, "sleep", lambda s: None)
    call, calls = _flaky([db_error("database is locked")] * 10)
    with pytest.raises(sqlalchemy.exc.OperationalError, match="locked"):
        retry.per_call(call)(1)
    assert len(calls) == retry.CALL_ATTEMPTS
    call, calls = _flaky([db_error("no such table: runs")])
    with pytest.raises(sqlalchemy.exc.OperationalError, match="no such table"):
        retry.per_call(call)(1)
    assert len(calls) == 1


def test_a_call_that_took_effect_before_its_refusal_is_recovered_not_repeated(monkeypatch):
    """`recover` is asked after each wait and once more before giving up; the call is tried
    again only when `recover` said "not done"; while `recover` itself is refused the call is not
    repeated (it may have taken effect); any other error in `recover` is raised."""
    from adaptflow import retry

    monkeypatch.setattr(retry.time, "sleep", lambda s: None)
    done: list[int] = []

    def registers_then_refused(x):  # what register_model does: commits, then a write refused
        done.append(x)
        raise db_error("database is locked")

    asked = []

    def found(x):
        asked.append(x)
        if len(asked) == 1:  # the lookup itself hits the busy store once
            raise db_error("database is locked")
        return done[-1] * 10 if done else None

    assert retry.per_call(registers_then_refused, recover=found)(3) == 30
    assert done == [3] and asked == [3, 3]  # the refused lookup is asked again, not the call

    # the lookup refused every time: the call is made once, then its refusal is raised
    done.clear()
    asked.clear()

    def busy(x):
        asked.append(x)
        raise db_error("database is locked")

    with pytest.raises(sqlalchemy.exc.OperationalError, match="locked"):
        retry.per_call(registers_then_refused, recover=busy)(3)
    assert done == [3] and len(asked) == retry.CALL_ATTEMPTS

    # every try refused, the call never took effect: asked before giving up, then raised
    asked.clear()
    call, calls = _flaky([db_error("database is locked")] * 10)
    with pytest.raises(sqlalchemy.exc.OperationalError, match="locked"):
        retry.per_call(call, recover=lambda x: asked.append(x))(1)
    assert len(calls) == retry.CALL_ATTEMPTS and len(asked) == retry.CALL_ATTEMPTS

    # a real error in the lookup is not swallowed
    def broken(x):
        raise ValueError("bad lookup")

    call, calls = _flaky([db_error("database is locked")])
    with pytest.raises(ValueError, match="bad lookup"):
        retry.per_call(call, recover=broken)(1)
