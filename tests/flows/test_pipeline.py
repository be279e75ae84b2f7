"""The whole pipeline on profile=smoke in a temporary project: runs, metrics, registry, cache."""

from __future__ import annotations

import json

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from prefect.testing.utilities import prefect_test_harness

from adaptflow.config import load_params
from adaptflow.data import prepare_all
from adaptflow.tracking.store import configure


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture
def smoke_project(project, harness):
    prepare_all(load_params("params.yaml"), ["mnist"], log=lambda m: None)
    return project


SMOKE = ["profile=smoke", "ae.max_train=300", "ae.epochs=1"]


def run_pipeline(overrides, force=False):
    from flows.pipeline import pipeline_flow

    return pipeline_flow("params.yaml", overrides, ".", force, False)


def stage_runs(client, exp_id, parent_id):
    return client.search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")


def test_pipeline_runs_logs_registers_and_caches(smoke_project):
    out = run_pipeline(SMOKE)["ae"]
    exp_id = configure(".", "adaptflow-smoke")
    client = MlflowClient()
    assert (
        mlflow.get_tracking_uri().startswith("sqlite:///")
        and (smoke_project / "mlruns" / "mlflow.db").is_file()
    )

    stage = client.get_run(out["run_id"])
    parent = client.get_run(stage.data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED" and stage.info.status == "FINISHED"
    assert stage.data.tags["adaptflow.cache_hit"] == "false"
    for key in ("ae/test_mse", "ae/test_mse_pca", "ae/test_mse_ae"):
        assert 0 < stage.data.metrics[key] < 1
    assert parent.data.metrics["ae/test_mse"] == stage.data.metrics["ae/test_mse"]
    assert stage.data.params["ae.epochs"] == "1" and stage.data.tags["adaptflow.git_commit"]
    assert stage.data.tags["adaptflow.device"] == "cpu" or stage.data.tags[
        "adaptflow.device"
    ].startswith("cuda")

    # the prepared dataset is an MLflow dataset input whose digest is the file's md5 (DVC's)
    manifest = json.loads((smoke_project / "data/prepared/mnist.json").read_text())
    inputs = stage.inputs.dataset_inputs
    assert [(d.dataset.name, d.dataset.digest) for d in inputs] == [("mnist", manifest["md5"])]

    # one nested run per method below the stage run, and the artifacts on the stage run
    methods = {
        r.data.tags["adaptflow.method"]: r for r in stage_runs(client, exp_id, stage.info.run_id)
    }
    assert set(methods) == {"pca", "ae"} and all(
        r.info.status == "FINISHED" for r in methods.values()
    )
    artifacts = {a.path for a in client.list_artifacts(stage.info.run_id, "ae")}
    assert {"ae/comparison.md", "ae/reconstructions.png", "ae/loss_curves.png"} <= artifacts

    # registered, champion on the first version, loads back and reconstructs
    mv = client.get_model_version_by_alias("adaptflow-ae", "champion")
    assert str(mv.version) == out["model_version"] == "1"
    model = mlflow.pytorch.load_model("models:/adaptflow-ae@champion")
    import numpy as np
    import torch

    x = np.load(smoke_project / "data/prepared/mnist.npz")["x_test"][:3]
    assert model(torch.from_numpy(x)).shape == (3, 1, 28, 28)
    assert json.loads((smoke_project / "reports/metrics.json").read_text())["ae"]["ae/test_mse"] > 0

    # an unchanged re-run hits the cache: no training, no new model version
    again = run_pipeline(SMOKE)["ae"]
    assert again["cache_hit"] and again["metrics"]["ae/test_mse"] == out["metrics"]["ae/test_mse"]
    assert again["model_version"] == "1"  # the cached run still names its model
    hit = client.get_run(again["run_id"])
    assert hit.data.tags["adaptflow.cached_from"] == out["run_id"]
    assert len(client.search_model_versions("name='adaptflow-ae'")) == 1

    # a changed param re-runs the stage, registers v2, champion stays on v1
    changed = run_pipeline([*SMOKE, "ae.lr=0.002"])["ae"]
    assert not changed["cache_hit"] and changed["model_version"] == "2"
    assert str(client.get_model_version_by_alias("adaptflow-ae", "champion").version) == "1"
    # --force recomputes even when unchanged
    assert not run_pipeline(SMOKE, force=True)["ae"]["cache_hit"]


def test_failing_stage_ends_failed_with_error_tag(smoke_project, monkeypatch):
    from adaptflow.stages import STAGES

    def boom(*args, **kwargs):
        raise RuntimeError("synthetic failure")

    spec = STAGES.get("ae")
    monkeypatch.setitem(STAGES._items, "ae", type(spec)(**{**spec.__dict__, "run": boom}))
    with pytest.raises(Exception, match="synthetic failure"):
        print(run_pipeline(SMOKE))
    client = MlflowClient()
    exp_id = configure(".", "adaptflow-smoke")
    failed = client.search_runs([exp_id], "attributes.status = 'FAILED'")
    kinds = {r.data.tags.get("adaptflow.stage", r.data.tags.get("adaptflow.kind")) for r in failed}
    assert kinds == {"ae", "pipeline"}
    assert all("synthetic failure" in r.data.tags["adaptflow.error"] for r in failed)


def test_missing_data_names_the_fix(project, harness):
    with pytest.raises(Exception, match="make data"):
        run_pipeline(SMOKE)
