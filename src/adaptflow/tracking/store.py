"""Where runs go: `MLFLOW_TRACKING_URI` when set (a server), else sqlite under <root>/mlruns.

Nothing here runs at import time; `configure()` is called by the flows/CLI at the start of a run.
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient


def configure(root: Path | str = ".", experiment: str = "adaptflow") -> str:
    """Point MLflow at the store and make sure the experiment exists; returns its id."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    root = Path(root).resolve()
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        (root / "mlruns").mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        return exp.experiment_id
    artifacts = None if os.environ.get("MLFLOW_TRACKING_URI") else (root / "mlruns" / "artifacts").as_uri()
    return client.create_experiment(experiment, artifact_location=artifacts)


def tracking_uri() -> str:
    return mlflow.get_tracking_uri()
