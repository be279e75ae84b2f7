"""The whole pipeline on profile=smoke in a temporary project: runs, metrics, registry, cache."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from prefect.testing.utilities import prefect_test_harness

from adaptflow.config import load_params
from adaptflow.data import prepare_all
from adaptflow.tracking.store import configure

EXPERIMENT = "adaptflow-smoke"
SMOKE = [
    "profile=smoke",
    "ae.max_train=300",
    "ae.epochs=1",
    "ae.methods=[pca, ae, vae]",
    "ae.archs=[mlp]",
    "pretrain.max_train=300",
]


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture
def smoke_project(project, harness):
    prepare_all(load_params("params.yaml"), ["mnist"], log=lambda m: None)
    return project


def run_pipeline(overrides, force=False, stages=None):
    from flows.pipeline import pipeline_flow

    return pipeline_flow("params.yaml", overrides, ".", force, False, stages)


def children(client, exp_id, parent_id):
    return client.search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")


def test_pipeline_runs_logs_registers_and_caches(smoke_project):
    outcomes = run_pipeline(SMOKE)
    assert list(outcomes) == ["ae", "pretrain"]
    exp_id = configure(".", EXPERIMENT)
    client = MlflowClient()
    assert (smoke_project / "mlruns" / "mlflow.db").is_file()

    ae = client.get_run(outcomes["ae"]["run_id"])
    parent = client.get_run(ae.data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED"
    stage_runs = {
        r.data.tags["adaptflow.stage"]: r for r in children(client, exp_id, parent.info.run_id)
    }
    assert set(stage_runs) == {"ae", "pretrain"}
    assert all(
        r.info.status == "FINISHED" and r.data.tags["adaptflow.cache_hit"] == "false"
        for r in stage_runs.values()
    )

    m = ae.data.metrics
    for key in ("ae/test_mse", "ae/pca/test_mse", "ae/ae-mlp/test_mse", "ae/vae-mlp/test_mse"):
        assert 0 < m[key] < 1
    assert 0 < m["ae/vae-mlp/test_nll_iw"] <= m["ae/vae-mlp/test_neg_elbo"]
    assert 0 <= m["ae/ae-mlp/test_anomaly_auroc"] <= 1
    assert parent.data.metrics["ae/test_mse"] == m["ae/test_mse"]
    assert ae.data.params["ae.epochs"] == "1" and ae.data.tags["adaptflow.git_commit"]
    assert ae.data.tags["adaptflow.device"] in {"cpu", "cuda", "mps"}

    # the prepared dataset is an MLflow dataset input whose digest is the file's md5 (DVC's)
    manifest = json.loads((smoke_project / "data/prepared/mnist.json").read_text())
    assert [(d.dataset.name, d.dataset.digest) for d in ae.inputs.dataset_inputs] == [
        ("mnist", manifest["md5"])
    ]

    # one nested run per method below the ae stage run; figures and the table on the stage run
    methods = {r.data.tags["adaptflow.method"]: r for r in children(client, exp_id, ae.info.run_id)}
    assert set(methods) == {"pca", "ae", "vae"}
    assert all(r.info.status == "FINISHED" for r in methods.values())
    artifacts = {a.path for a in client.list_artifacts(ae.info.run_id, "ae")}
    expected = {
        "comparison.md",
        "comparison.csv",
        "reconstructions.png",
        "denoising.png",
        "loss_curves.png",
        "embeddings.png",
        "vae-mlp_samples.png",
        "vae-mlp_interpolation.png",
    }
    assert {f"ae/{a}" for a in expected} <= artifacts
    table = open(client.download_artifacts(parent.info.run_id, "ae/comparison.md")).read()
    assert "| pca" in table and "holds" in table

    # pretrain: one greedy run and 2 fractions x 2 arms of fine-tuning, verdict on the parent
    pre = stage_runs["pretrain"]
    names = sorted(r.info.run_name for r in children(client, exp_id, pre.info.run_id))
    assert names == [
        "pretrain/greedy-f0.05-s0",
        "pretrain/greedy-f1-s0",
        "pretrain/greedy-s0",
        "pretrain/random-f0.05-s0",
        "pretrain/random-f1-s0",
    ]
    verdict = open(client.download_artifacts(parent.info.run_id, "pretrain/verdict.md")).read()
    assert verdict.count("| holds |") + verdict.count("| does not hold |") == 3  # three claims
    assert 0 <= pre.data.metrics["pretrain/greedy/f1/test_acc_mean"] <= 1

    # registered, champion on the first version, loads back and computes
    for name in ("adaptflow-smoke-ae", "adaptflow-smoke-pretrain"):
        assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    x = np.load(smoke_project / "data/prepared/mnist.npz")["x_test"][:3]
    assert mlflow.pytorch.load_model("models:/adaptflow-smoke-ae@champion")(
        torch.from_numpy(x)
    ).shape == (3, 1, 28, 28)
    assert mlflow.pytorch.load_model("models:/adaptflow-smoke-pretrain@champion")(
        torch.from_numpy(x)
    ).shape == (3, 10)
    metrics_file = json.loads((smoke_project / "reports/metrics.json").read_text())
    assert metrics_file["ae/test_mse"] == m["ae/test_mse"]

    # an unchanged re-run hits the cache: no training, no new model version
    again = run_pipeline(SMOKE)
    assert all(o["cache_hit"] for o in again.values())
    assert again["ae"]["metrics"]["ae/test_mse"] == outcomes["ae"]["metrics"]["ae/test_mse"]
    assert again["ae"]["model_version"] == "1"  # the cached run still names its model
    assert (
        client.get_run(again["ae"]["run_id"]).data.tags["adaptflow.cached_from"]
        == outcomes["ae"]["run_id"]
    )
    assert len(client.search_model_versions("name='adaptflow-smoke-ae'")) == 1

    # a changed ae param re-runs only ae (v2), pretrain stays cached, champion stays on v1
    changed = run_pipeline([*SMOKE, "ae.lr=0.002"])
    assert not changed["ae"]["cache_hit"] and changed["pretrain"]["cache_hit"]
    assert changed["ae"]["model_version"] == "2"
    assert str(client.get_model_version_by_alias("adaptflow-smoke-ae", "champion").version) == "1"
    # --force recomputes even when unchanged
    assert not run_pipeline(SMOKE, force=True, stages=["ae"])["ae"]["cache_hit"]


def test_failing_stage_ends_failed_with_error_tag(smoke_project, monkeypatch):
    from adaptflow.stages import STAGES

    def boom(*args, **kwargs):
        raise RuntimeError("synthetic failure")

    spec = STAGES.get("ae")
    monkeypatch.setitem(STAGES._items, "ae", type(spec)(**{**spec.__dict__, "run": boom}))
    with pytest.raises(Exception, match="synthetic failure"):
        run_pipeline(SMOKE, stages=["ae"])
    client = MlflowClient()
    failed = client.search_runs([configure(".", EXPERIMENT)], "attributes.status = 'FAILED'")
    kinds = {r.data.tags.get("adaptflow.stage", r.data.tags.get("adaptflow.kind")) for r in failed}
    assert kinds == {"ae", "pipeline"}
    assert all("synthetic failure" in r.data.tags["adaptflow.error"] for r in failed)


def test_missing_data_names_the_fix(project, harness):
    with pytest.raises(Exception, match="make data"):
        run_pipeline(SMOKE)
