"""Where runs go: `MLFLOW_TRACKING_URI` when set (a server), else sqlite under <root>/mlruns.

Artifacts of the local store live in <root>/mlruns/artifacts/<experiment id>, and the experiment
records that location *relative* to the project root ("mlruns/artifacts/<id>"). MLflow 3 makes
every local location absolute when an experiment is created (`SqlAlchemyStore.create_experiment`
calls `resolve_uri_if_local`); runs and logged models then copy the experiment's location as a
prefix (`append_to_uri_path`) and resolve nothing themselves. An absolute path would tie every
artifact link to one machine's folder, so `configure()` rewrites the experiment's row to the
relative form (`_portable_locations`; MLflow's own "Default" experiment too). Runs, logged
models and registered versions inherit it, and MLflow reads them relative to the working
directory, which is the project root for `adaptflow run`, `make ui` and the tests. Moving or
copying the checkout keeps every link valid. Loading a model from elsewhere: chdir to the project
root first (`mlflow.pyfunc.load_model("models:/adaptflow-ae/1")` then resolves its files), or
run `mlflow server --backend-store-uri sqlite:///mlruns/mlflow.db` from the root and point
MLFLOW_TRACKING_URI at it.

Two pipelines may share one local store at once (sqlite; MLflow waits up to 20 s on a busy
database, adaptflow.retry retries a call still refused). What must not interleave between them is
serialised by `store_lock`, a file lock beside the database: creating the store and an experiment,
and a registry gate's read-decide-alias sequence (tracking.models). A tracking server has no such
lock (its clients may be on other machines): there the gate re-checks the champion before moving
the alias.

Nothing here runs at import time; `configure()` is called by the flows/CLI at the start of a run.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import mlflow
from mlflow.tracking import MlflowClient

ARTIFACTS = "mlruns/artifacts"  # relative to the project root
_OWN_URI: str | None = None  # the default URI we set (mlflow copies it into MLFLOW_TRACKING_URI)


class StoreError(RuntimeError):
    """The local store cannot be used as asked (e.g. relative artifact links from another cwd)."""


LOCK_TIMEOUT = 600.0  # seconds; a gate or a store creation takes well under one


@contextlib.contextmanager
def store_lock(name: str, root: Path | str | None = None) -> Iterator[bool]:
    """Hold the cross-process lock `name` of the sqlite store in use (<its folder>/.locks/
    <name>.lock: mlruns/.locks/ for the local store); yields True. With a tracking server there
    is no shared folder: yields False and locks nothing. `root`: the project root, else the
    root of the store in use (the cwd)."""

    uri = user_uri()
    if uri is None:
        folder = Path(root or ".").resolve() / "mlruns" / ".locks"
    elif uri.startswith("sqlite:///"):  # a sqlite file the user chose: lock beside it
        db = Path(unquote(uri.removeprefix("sqlite:///").split("?")[0]))  # relative: to the cwd
        folder = db.resolve().parent / ".locks"
    else:
        yield False
        return
    folder.mkdir(parents=True, exist_ok=True)
    lock = acquire(folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.lock", LOCK_TIMEOUT)
    try:
        yield True
    finally:
        lock.release()


def acquire(path: Path, timeout: float, holder: str = "another adaptflow process holds it"):
    """A held cross-process FileLock on `path` (released by the caller); StoreError after
    `timeout` seconds, naming the file and what to do if the holder is gone."""
    from filelock import FileLock, Timeout

    lock = FileLock(path, timeout=timeout, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise StoreError(
            f"waited {timeout:.0f} s for {path}: {holder}. If none is running (`ps`), delete "
            "the file and run again"
        ) from None
    return lock


def user_uri() -> str | None:
    """The tracking URI the user set (a server), None when runs go to the local store."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    return None if uri is None or uri == _OWN_URI else uri


def check_server(timeout: float = 5.0) -> None:
    """Fail in seconds when MLFLOW_TRACKING_URI names an http(s) server that does not answer:
    MLflow's client retries a refused connection 7 times with growing waits (~4 min) before
    its error reaches us."""
    uri = user_uri()
    if uri is None or not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        answer = requests.get(f"{uri.rstrip('/')}/health", timeout=timeout)
        problem = None if answer.status_code == 200 else f"/health answered {answer.status_code}"
    except requests.RequestException as e:
        problem = f"{type(e).__name__}"
    if problem is not None:
        raise StoreError(
            f"the tracking server MLFLOW_TRACKING_URI={shown_uri(uri)} does not answer "
            f"({problem}): start it (`make tracking-server`), or unset MLFLOW_TRACKING_URI to "
            "use the local store mlruns/"
        )


def shown_uri(uri: str) -> str:
    """`uri` without a user:password part, for messages and logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def configure(root: Path | str = ".", experiment: str = "adaptflow") -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    root = Path(root).resolve()
    uri = user_uri()
    own = uri is None
    if not own:
        check_server()
    if own:
        uri = _local_db(root)  # refuses another cwd before anything is created
        (root / "mlruns").mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    # another pipeline starting at the same time must not create the tables or the experiment
    # twice (the second would fail on "already exists")
    with store_lock("store", root if own else None):
        client = MlflowClient()
        exp = client.get_experiment_by_name(experiment)
        # a server (user URI) picks its own artifact root; the local store gets relative ones
        exp_id = client.create_experiment(experiment) if exp is None else exp.experiment_id
        if own:
            _portable_locations(
                root / "mlruns" / "mlflow.db", root, created=exp_id if exp is None else None
            )
    mlflow.set_experiment(experiment_id=exp_id)  # nested method runs land in the same experiment
    return exp_id


def use_store(root: Path | str = ".") -> str:
    """Point MLflow at the existing store to read it (load models, list the registry): writes
    nothing, creates no experiment. The local store must exist and be used from its root."""
    check_server()
    uri = user_uri()
    if uri is None:
        db = Path(root).resolve() / "mlruns" / "mlflow.db"
        if not db.exists():
            raise StoreError(
                f"no MLflow store at {db}: run the pipeline first (`make pipeline`), or set "
                "MLFLOW_TRACKING_URI to a tracking server"
            )
        uri = _local_db(root)
    mlflow.set_tracking_uri(uri)
    return uri


def _local_db(root: Path | str) -> str:
    """The sqlite URI of <root>/mlruns/mlflow.db, remembered as ours; only from the project root
    (artifact links are relative to it: they would point under the cwd, not under root)."""
    global _OWN_URI
    root = Path(root).resolve()
    if root != Path.cwd().resolve():
        raise StoreError(
            f"the local MLflow store is used from its project root only (its artifact links "
            f"are relative to it): cd {root} first. To load a registered model from another "
            "directory, chdir to the project root before mlflow.pyfunc.load_model("
            "'models:/<name>/<version>'), or serve the store with `mlflow server` and set "
            "MLFLOW_TRACKING_URI to it"
        )
    _OWN_URI = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    return _OWN_URI


# what MLflow or an older adaptflow made absolute: <root>/mlruns/<id> (MLflow's "Default"
# experiment), <root>/mlruns/artifacts[/<id>] (as file:// URI or path), for THIS project's root
# only. Any other location (another project's store that merely ends in /mlruns, a big disk)
# was chosen by someone else and is left alone.
_MADE_HERE = re.compile(r"^(file://)?(?P<path>/.*)/mlruns(/artifacts)?(/\d+)?/?$")


def made_here(location: str | None, root: Path) -> bool:
    """True when `location` is an absolute <root>/mlruns[/artifacts][/<id>] of this project."""
    m = _MADE_HERE.match(location or "")
    if m is None:
        return False
    return Path(unquote(m["path"])).resolve() == Path(root).resolve()


def _portable_locations(db: Path, root: Path, created: str | None = None) -> None:
    """Store "mlruns/artifacts/<id>" as the location of experiments MLflow made absolute (see the
    module docstring). Runs made before keep their own links; new runs get relative ones.
    `experiments.artifact_location` is MLflow's own column."""
    with sqlite3.connect(db, timeout=30) as con:  # another pipeline may be writing
        rows = con.execute("SELECT experiment_id, artifact_location FROM experiments").fetchall()
        for exp_id, location in rows:
            if str(exp_id) == created or made_here(location, root):
                con.execute(
                    "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                    (f"{ARTIFACTS}/{exp_id}", exp_id),
                )
    con.close()
