"""Model logging and the registry: every stage registers `adaptflow-<stage>`; `champion` alias."""

from __future__ import annotations

import importlib.metadata as md
import logging
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from adaptflow.tracking.runs import set_model_tags

CHAMPION = "champion"
RUNTIME_PACKAGES = ("torch", "numpy", "pydantic", "scikit-learn")


def pip_requirements() -> list[str]:
    return [f"{p}=={md.version(p)}" for p in RUNTIME_PACKAGES]


def log_torch_model(model: torch.nn.Module, x_example: np.ndarray) -> str:
    """Log a torch module (pickle format + the adaptflow source as code_paths) and its state_dict.

    pickle, not pt2: pt2 loads back as a traced GraphModule, losing encode()/decode methods that
    later stages use. The state_dict beside it can be read with torch.load(weights_only=True).
    Nothing is registered here: the stage's execute() registers the model once the whole stage
    has finished (a failed stage leaves no version behind). Returns the model URI.
    """
    model = model.cpu().eval()
    with torch.no_grad():
        y_example = model(torch.from_numpy(x_example)).numpy()
    pickle_warning = logging.getLogger("mlflow.pytorch")  # the choice is deliberate (see above)
    level = pickle_warning.level
    pickle_warning.setLevel(logging.ERROR)
    try:
        info = _log(model, x_example, y_example)
    finally:
        pickle_warning.setLevel(level)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state_dict.pt"
        torch.save(model.state_dict(), path)
        mlflow.log_artifact(str(path), "checkpoint")
    mlflow.set_tag("adaptflow.model_uri", info.model_uri)
    return info.model_uri


def register(model_uri: str, name: str) -> str:
    """Register a logged model under `name`; returns the new version."""
    mv = mlflow.register_model(model_uri, name, await_registration_for=0)
    set_model_tags(name, str(mv.version))
    return str(mv.version)


def _log(model, x_example, y_example):
    import adaptflow

    return mlflow.pytorch.log_model(
        model,
        name="model",
        serialization_format="pickle",
        pip_requirements=pip_requirements(),
        code_paths=[str(Path(adaptflow.__file__).parent)],
        signature=infer_signature(x_example, y_example),
    )


def ensure_champion(name: str, version: str) -> str:
    """Give `champion` to `version` unless the model has one already (gates come later)."""
    client = MlflowClient()
    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        client.set_registered_model_alias(name, CHAMPION, version)
        return version
