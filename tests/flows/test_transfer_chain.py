"""The transfer chain source -> features -> finetune through Prefect and MLflow, tiny, on the
smoke profile: models pass through MLflow (URIs from the pipeline, or the registry when a stage
runs alone), features are extracted once and reused, labels stay inside the budget, every
backbone is gated under its own alias."""

from __future__ import annotations

import hashlib
import math

import mlflow
import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from adaptflow.config import load_params
from adaptflow.data import prepare_all
from adaptflow.stages import finetune as finetune_stage
from adaptflow.stages.budget import data_plan
from adaptflow.tracking.store import configure

EXPERIMENT = "adaptflow-smoke"
CHAIN = ["source", "features", "finetune"]
TINY = [
    "profile=smoke",
    "source.max_train=1000",
    "source.lr=0.005",
    "source.epochs=3",
    "source.batch_size=32",
    "transfer.max_train=200",
    "transfer.max_test=100",
    "transfer.label_fractions=[0.1, 1.0]",
    "features.max_test=100",
    "features.tsne_points=40",
]


@pytest.fixture
def chain_project(project, harness):
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["data"]["sources"]["synchars"].update(n_train=1080, n_test=108)  # 30 per class: fast
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    prepare_all(load_params("params.yaml"), ["mnist", "digits", "synchars"], log=lambda m: None)
    return project


def run_pipeline(overrides, stages, force=False):
    from flows.pipeline import pipeline_flow

    return pipeline_flow("params.yaml", overrides, ".", force, False, stages)


def rows(x: np.ndarray) -> set[str]:
    return {hashlib.sha1(r.tobytes()).hexdigest() for r in x}


def test_chain_passes_models_through_mlflow_within_the_label_budget(chain_project, monkeypatch):
    params = load_params("params.yaml", TINY)
    data = np.load(chain_project / "data/prepared/mnist.npz")
    plan = data_plan(len(data["x_train"]), 0.1, params.transfer.max_train, params.seed)
    forbidden = rows(data["x_test"]) | rows(data["x_train"][plan.monitor])
    fed = []  # (fraction-free) every labelled array an arm trained on

    import adaptflow.methods.transfer as transfer

    finetune, train_head = transfer.finetune, transfer.train_head

    def spy_finetune(model, x, y, **kwargs):
        fed.append((len(x), rows(x)))
        return finetune(model, x, y, **kwargs)

    def spy_head(f, y, n_classes, **kwargs):
        if kwargs.get("monitor") is not None:  # finetune's features arm (not the features stage)
            fed.append((len(f), None))  # feature vectors of the same fit indices
        return train_head(f, y, n_classes, **kwargs)

    monkeypatch.setattr(transfer, "finetune", spy_finetune)
    monkeypatch.setattr(transfer, "train_head", spy_head)
    out = run_pipeline(TINY, CHAIN)
    client = MlflowClient()
    exp_id = configure(".", EXPERIMENT)

    # source: one version per backbone, each the champion of its own alias, loadable by URI
    src = out["source"]
    assert set(src["models"]) == {"resnet", "vit"}
    versions = {label: m["version"] for label, m in src["models"].items()}
    assert sorted(versions.values()) == ["1", "2"]
    for label, version in versions.items():
        mv = client.get_model_version_by_alias("adaptflow-smoke-source", f"champion-{label}")
        assert str(mv.version) == version and mv.tags["gate.decision"] == "champion"
        assert mv.tags["gate.metric"] == f"source/{label}/val_acc" and mv.tags["backbone"] == label
        assert float(mv.tags["gate.value"]) == src["metrics"][f"source/{label}/val_acc"]
    net = mlflow.pytorch.load_model("models:/adaptflow-smoke-source@champion-vit")
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 36)
    assert src["metrics"]["source/resnet/val_acc"] > 3 / 36  # it learned the source task

    # features: the pipeline passed the source run's models (not a registry lookup); features
    # saved once per backbone x dataset
    feat = client.get_run(out["features"]["run_id"])
    assert feat.data.tags["adaptflow.upstream.source"] == src["cache_key"]
    for label in ("resnet", "vit"):
        for ds in ("mnist", "digits"):
            path = client.download_artifacts(feat.info.run_id, f"features/{label}/{ds}.npz")
            with np.load(path) as z:
                assert z["f_train"].shape[0] == len(np.load(f"data/prepared/{ds}.npz")["y_train"])
                assert (
                    z["f_train"].shape[1]
                    == out["features"]["metrics"][f"features/{label}/{ds}/dim"]
                )
        assert f"features/{label}_mnist_tsne.png" in {
            a.path for a in client.list_artifacts(feat.info.run_id, "features")
        }

    # finetune: reused the features artifact; every arm's labels within floor(f*N), none from
    # test or the monitor split
    ft = out["finetune"]
    ft_run = client.get_run(ft["run_id"])
    assert ft_run.data.tags["adaptflow.upstream.features"] == out["features"]["cache_key"]
    registered = {
        r.data.tags["adaptflow.backbone"]: r
        for r in client.search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{ft['run_id']}'")
        if r.info.run_name.endswith("-registered")
    }
    assert {r.data.tags["adaptflow.features_from"] for r in registered.values()} == {
        f"features run {feat.info.run_id}"
    }
    n_runs = 2 * len(params.transfer.seeds) * 2  # backbones x seeds x fractions
    target_rows = rows(data["x_train"])
    images = [(n, h) for n, h in fed if h is not None and h <= target_rows]  # not the source's
    heads = [n for n, h in fed if h is None]  # the features arm: a head on feature vectors
    assert len(images) == 2 * n_runs and len(heads) == n_runs  # finetune + scratch, features
    allowed = {f: math.floor(f * plan.n_total + 1e-9) for f in (0.1, 1.0)}
    sizes = sorted({n for n, _ in images} | set(heads))
    assert sizes == [allowed[0.1], len(plan.pool)] and len(plan.pool) <= allowed[1.0]
    assert not any(h & forbidden for _, h in images)
    csv = client.download_artifacts(ft["run_id"], "finetune/runs.csv")
    import pandas as pd

    table = pd.read_csv(csv)
    assert len(table) == 3 * n_runs
    assert (table.n_labels <= table.fraction.map(allowed)).all()

    # finetune registry: one version per backbone; its gate value is the registered model's
    # accuracy on the monitor half that did not pick the arm
    pick, gate = finetune_stage.monitor_halves(plan.monitor, params.seed)
    assert not set(pick) & set(gate) and set(pick) | set(gate) == set(plan.monitor)
    for label, m in ft["models"].items():
        assert m["decision"] == "champion"
        model = mlflow.pytorch.load_model(f"models:/adaptflow-smoke-finetune@champion-{label}")
        with torch.no_grad():
            pred = model(torch.from_numpy(data["x_train"][gate])).argmax(1).numpy()
        acc = float((pred == data["y_train"][gate]).mean())
        assert acc == pytest.approx(ft["metrics"][f"finetune/{label}/gate_val_acc"])
    report = mlflow.artifacts.load_text(f"runs:/{ft['run_id']}/finetune/report.md")
    assert report.count("| [resnet]") == 5 and report.count("| [vit]") == 5
    assert "feature extraction | fine-tuning | scratch" in report

    # a re-run is served from the cache, labelled decisions included
    again = run_pipeline(TINY, CHAIN)
    assert all(o["cache_hit"] for o in again.values())
    assert {k: m["version"] for k, m in again["source"]["models"].items()} == versions
    assert {m["decision"] for m in again["finetune"]["models"].values()} == {"champion"}


def test_a_stage_run_alone_takes_its_upstream_from_the_registry(chain_project):
    run_pipeline(TINY, ["source"])
    alone = run_pipeline(TINY, ["features"])["features"]
    tag = MlflowClient().get_run(alone["run_id"]).data.tags["adaptflow.upstream.source"]
    assert tag.startswith("registry:") and "resnet=v" in tag and "vit=v" in tag


def test_a_stage_without_its_upstream_models_names_the_fix(chain_project):
    with pytest.raises(Exception, match="run the source stage first"):
        run_pipeline(TINY, ["features"])


def test_each_backbone_is_gated_against_its_own_champion(chain_project, monkeypatch):
    from adaptflow.stages import STAGES

    first = run_pipeline(TINY, ["source"])["source"]
    spec = STAGES.get("source")

    def vit_worse(params, ctx, data):
        out = spec.run(params, ctx, data)
        out.metrics["source/vit/val_acc"] -= 0.5
        out.metrics["source/resnet/val_acc"] += 0.5
        return out

    monkeypatch.setitem(STAGES._items, "source", type(spec)(**{**spec.__dict__, "run": vit_worse}))
    second = run_pipeline(TINY, ["source"], force=True)["source"]
    client = MlflowClient()
    name = "adaptflow-smoke-source"
    assert second["models"]["vit"]["decision"] == "challenger"
    assert second["models"]["resnet"]["decision"] == "champion"
    vit_now = client.get_model_version_by_alias(name, "champion-vit")
    assert str(vit_now.version) == first["models"]["vit"]["version"]
    resnet_now = client.get_model_version_by_alias(name, "champion-resnet")
    assert str(resnet_now.version) == second["models"]["resnet"]["version"]
    reason = client.get_model_version(name, second["models"]["vit"]["version"]).tags
    assert reason["gate.reason"].startswith("worse") and "champion v" in reason["gate.reason"]


@pytest.mark.slow  # ~85 s: two source stages
def test_a_failed_alias_move_puts_every_alias_back(chain_project, monkeypatch):
    """Both new versions would be champions; moving the second alias fails: the first alias goes
    back to its previous holder and both new versions are marked aborted."""
    import adaptflow.tracking.models as models
    from adaptflow.stages import STAGES

    first = run_pipeline(TINY, ["source"])["source"]
    spec = STAGES.get("source")

    def better(params, ctx, data):
        out = spec.run(params, ctx, data)
        for label in ("resnet", "vit"):
            out.metrics[f"source/{label}/val_acc"] += 1.0
        return out

    real = models.set_champion

    def flaky(name, version, client=None, alias="champion"):
        if alias == "champion-vit":
            raise RuntimeError("registry down")
        return real(name, version, client, alias)

    monkeypatch.setitem(STAGES._items, "source", type(spec)(**{**spec.__dict__, "run": better}))
    monkeypatch.setattr(models, "set_champion", flaky)
    with pytest.raises(Exception, match="registry down"):
        run_pipeline(TINY, ["source"], force=True)
    client = MlflowClient()
    name = "adaptflow-smoke-source"
    for label in ("resnet", "vit"):
        held = client.get_model_version_by_alias(name, f"champion-{label}")
        assert str(held.version) == first["models"][label]["version"]
    new = [v for v in client.search_model_versions(f"name='{name}'") if int(v.version) > 2]
    assert len(new) == 2 and {v.tags["gate.decision"] for v in new} == {"aborted"}
