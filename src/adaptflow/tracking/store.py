"""Where runs go: `MLFLOW_TRACKING_URI` when set (a server), else sqlite under <root>/mlruns.

Artifacts of the local store live in <root>/mlruns/artifacts/<experiment id>, and the experiment
records that location *relative* to the project root ("mlruns/artifacts/<id>"). MLflow 3 makes
every local location absolute when an experiment is created (`SqlAlchemyStore.create_experiment`
calls `resolve_uri_if_local`); runs and logged models then copy the experiment's location as a
prefix (`append_to_uri_path`) and resolve nothing themselves. An absolute path would tie every
artifact link to one machine's folder, so `configure()` rewrites the experiment's row to the
relative form right after creating it; runs, logged models and registered versions inherit it,
and MLflow reads them relative to the working directory, which is the project root for
`adaptflow run`, `make ui` and the tests. Moving or copying the checkout keeps every link valid.

Nothing here runs at import time; `configure()` is called by the flows/CLI at the start of a run.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

ARTIFACTS = "mlruns/artifacts"  # relative to the project root
_OWN_URI: str | None = None  # the default URI we set (mlflow copies it into MLFLOW_TRACKING_URI)


class StoreError(RuntimeError):
    """The local store cannot be used as asked (e.g. relative artifact links from another cwd)."""


def _user_uri() -> str | None:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    return None if uri is None or uri == _OWN_URI else uri


def configure(root: Path | str = ".", experiment: str = "adaptflow") -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    global _OWN_URI
    root = Path(root).resolve()
    uri = _user_uri()
    own = uri is None
    if own:
        if root != Path.cwd().resolve():
            # artifact links are relative: they would point under the cwd, not under root
            raise StoreError(
                f"the local MLflow store is used from its project root only: cd {root} "
                "(or set MLFLOW_TRACKING_URI to a tracking server)"
            )
        (root / "mlruns").mkdir(parents=True, exist_ok=True)
        uri = _OWN_URI = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        # a server (user URI) picks its own artifact root; the local store gets a relative one
        exp_id = client.create_experiment(experiment)
        if own:
            _relative_artifact_location(root / "mlruns" / "mlflow.db", exp_id)
    else:
        exp_id = exp.experiment_id
        location = exp.artifact_location
        if own and (location.startswith("file:") or Path(location).is_absolute()):
            # a store made by an older adaptflow: new runs get portable links from now on
            _relative_artifact_location(root / "mlruns" / "mlflow.db", exp_id)
    mlflow.set_experiment(experiment_id=exp_id)  # nested method runs land in the same experiment
    return exp_id


def _relative_artifact_location(db: Path, exp_id: str) -> None:
    """Store "mlruns/artifacts/<id>" as the experiment's location (MLflow would keep it absolute;
    see the module docstring). `experiments.artifact_location` is MLflow's own column."""
    with sqlite3.connect(db) as con:
        con.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
            (f"{ARTIFACTS}/{exp_id}", int(exp_id)),
        )
    con.close()


def artifact_location(experiment_id: str) -> str:
    """The experiment's artifact location as MLflow records it (relative for the local store)."""
    return MlflowClient().get_experiment(experiment_id).artifact_location
