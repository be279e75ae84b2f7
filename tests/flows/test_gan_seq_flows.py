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


def test_gan_and_seq_flows_register_through_their_gates_and_cache(project, harness):
    from flows.pipeline import pipeline_flow

    prepare_all(load_params("params.yaml"), ["mnist", "mnist1d"], log=lambda m: None)
    outcomes = pipeline_flow("params.yaml", TINY, ".", False, False, ["gan", "seq"])
    client = MlflowClient()
    exp_id = configure(".", "adaptflow-smoke")
    for stage, metric in (("gan", "gan/gate_val_frechet"), ("seq", "seq/gate_val_acc")):
        out = outcomes[stage]
        assert out["model_decision"] == "champion" and out["model_version"] == "1"
        run = client.get_run(out["run_id"])
        assert run.info.status == "FINISHED"
        version = client.get_model_version_by_alias(f"adaptflow-smoke-{stage}", "champion")
        assert float(version.tags["gate.value"]) == run.data.metrics[metric]
        parent = run.data.tags["mlflow.parentRunId"]
        assert f"{stage}/report.md" in {
            a.path for a in client.list_artifacts(parent, stage)
        }  # the report on the pipeline run too
        nested = client.search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{out['run_id']}'")
        assert len(nested) >= 3 and all(r.info.status == "FINISHED" for r in nested)
    generator = mlflow.pytorch.load_model("models:/adaptflow-smoke-gan@champion")
    assert generator.in_dim == 64 + 10  # the cGAN: noise + one-hot class
    assert generator(torch.randn(2, generator.in_dim)).shape == (2, 1, 28, 28)
    again = pipeline_flow("params.yaml", TINY, ".", False, False, ["gan", "seq"])
    assert again["gan"]["cache_hit"] and again["seq"]["cache_hit"]
    assert again["gan"]["metrics"] == outcomes["gan"]["metrics"]
