"""Shared fixtures. Every test runs offline, with tool state in temporary folders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_configure(config):
    os.environ.setdefault(
        "MPLCONFIGDIR", str(Path(config.rootpath) / ".cache" / "matplotlib-tests")
    )
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # tests use their own temporary sqlite store


@pytest.fixture(autouse=True)
def _no_inherited_tracking_uri():
    """Every test starts without MLFLOW_TRACKING_URI. MLflow writes the URI a test configured
    into os.environ, and a monkeypatch undone later can put an earlier test's store back: the
    next test would take it for a user's server and share that store."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield


def prepare_sources(out: Path, names: list[str]) -> Path:
    """The data sources `names` prepared into `out` (pass data.prepared_dir=<out>)."""
    from adaptflow.config import load_params
    from adaptflow.data import prepare_all

    params = load_params(REPO / "params.yaml", [f"data.prepared_dir={out}"])
    prepare_all(params, names, log=lambda m: None)
    return out


@pytest.fixture(scope="module")
def prepared_mnist(tmp_path_factory) -> Path:
    """mnist prepared once per test module in a temporary folder."""
    return prepare_sources(tmp_path_factory.mktemp("prepared"), ["mnist"])


@pytest.fixture
def raw_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A temporary project root holding a copy of params.yaml; the cwd for the test."""
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def shared_file(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} is absent: the shared benchmark data is not beside this checkout")
    return path


@pytest.fixture
def one_thread():
    """Tiny torch models: threads only add overhead (and contention with a parallel run)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
