"""The `gan` and `seq` stages through Prefect and MLflow (smoke profile, tiny): nested runs
under the pipeline run, models registered through each stage's gate (champion on v1), the
reports on the parent run, and an unchanged re-run served from the cache."""

from __future__ import annotations

import mlflow
import torch
from mlflow.tracking import MlflowClient

from adaptflow.config import load_params
from adaptflow.data import prepare_all
from adaptflow.tracking.store import configure

TINY = [
    "profile=smoke",
    "gan.epochs=1",
    "gan.max_train=1000",
    "gan.max_test=100",
    "gan.eval_samples=40",
    "gan.augment.seeds=[0]",
    "gan.augment.gan_steps=10",
    "gan.augment.classifier_steps=10",
    "seq.seeds=[0]",
    "seq.epochs=1",
    "seq.max_train=200",
    "seq.max_test=100",
    "seq.timing_lengths=[20]",
    "seq.timing_batches=1",
    "seq.timing_repeats=1",
    "seq.models=[transformer, lstm]",
]


def test_gan_and_seq_flows_gate_their_models_and_cache(project, harness):
    """seq's Transformer registers through its gate (champion on v1). The 1-epoch GAN of width 8
    is below the registry's sanity bar (its samples hit few classes): the run finishes, says why
    and registers nothing (tests/stages/test_gan_stage.py covers the bar and the gate metric)."""
    from flows.pipeline import pipeline_flow

    prepare_all(load_params("params.yaml"), ["mnist", "mnist1d"], log=lambda m: None)
    outcomes = pipeline_flow("params.yaml", TINY, ".", False, False, ["gan", "seq"])
    client = MlflowClient()
    exp_id = configure(".", "adaptflow-smoke")
    for stage in ("gan", "seq"):
        out = outcomes[stage]
        run = client.get_run(out["run_id"])
        assert run.info.status == "FINISHED"
        parent = run.data.tags["mlflow.parentRunId"]
        assert f"{stage}/report.md" in {a.path for a in client.list_artifacts(parent, stage)}
        nested = client.search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{out['run_id']}'")
        assert len(nested) >= 3 and all(r.info.status == "FINISHED" for r in nested)
    seq = outcomes["seq"]
    assert seq["model_decision"] == "champion" and seq["model_version"] == "1"
    version = client.get_model_version_by_alias("adaptflow-smoke-seq", "champion")
    seq_run = client.get_run(seq["run_id"])
    assert float(version.tags["gate.value"]) == seq_run.data.metrics["seq/gate_val_acc"]
    transformer = mlflow.pytorch.load_model("models:/adaptflow-smoke-seq@champion")
    assert transformer(torch.randn(2, 1, 40)).shape == (2, 10)
    gan = outcomes["gan"]
    assert gan["model_decision"] == "not registered" and gan["model_version"] is None
    assert (
        "classes" in gan["model_decision_reason"] or "linear model" in gan["model_decision_reason"]
    )
    assert client.search_registered_models(filter_string="name = 'adaptflow-smoke-gan'") == []
    again = pipeline_flow("params.yaml", TINY, ".", False, False, ["gan", "seq"])
    assert again["gan"]["cache_hit"] and again["seq"]["cache_hit"]
    assert again["gan"]["metrics"] == gan["metrics"]
    assert again["gan"]["model_decision"] == "not registered"  # the reason survives the cache
