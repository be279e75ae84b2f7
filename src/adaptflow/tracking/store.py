"""Where runs go: `MLFLOW_TRACKING_URI` when set (a server), else sqlite under <root>/mlruns.

Nothing here runs at import time; `configure()` is called by the flows/CLI at the start of a run.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

_OWN_URI: str | None = None  # the default URI we set (mlflow copies it into MLFLOW_TRACKING_URI)


def _user_uri() -> str | None:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    return None if uri is None or uri == _OWN_URI else uri


def configure(root: Path | str = ".", experiment: str = "adaptflow") -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    global _OWN_URI
    root = Path(root).resolve()
    uri = _user_uri()
    if uri is None:
        (root / "mlruns").mkdir(parents=True, exist_ok=True)
        uri = _OWN_URI = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        artifacts = (root / "mlruns" / "artifacts").as_uri() if uri == _OWN_URI else None
        exp_id = client.create_experiment(experiment, artifact_location=artifacts)
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)  # nested method runs land in the same experiment
    return exp_id
