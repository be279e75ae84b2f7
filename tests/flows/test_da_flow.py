"""The `da` stage through Prefect and MLflow, tiny: one nested run per (pair, method, seed) with
its protocol tags, a report with verdicts, one gated model per pair under `champion-<pair>`, a
pair whose optional data is absent skipped with its reason, and a user's own feature-vector
files adapted end to end (MLP featurizer, standardisation, transductive protocol)."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from adaptflow.config import load_params
from adaptflow.data import prepare_all

from .conftest import TINY_DA

EXPERIMENT = "adaptflow-smoke"
TINY = TINY_DA


def run_da(overrides):
    from flows.pipeline import pipeline_flow

    return pipeline_flow("params.yaml", overrides, ".", False, False, ["da"])["da"]


def user_vectors(path, shift: float, seed: int, n: int = 400):
    """Three Gaussian classes in 20-D with values far outside [0, 1]; the target is moved and
    scaled (a covariate shift standardisation alone does not undo class-wise)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n) + 10  # labels 10, 11, 12: remapped to 0..2 for both domains
    centres = np.random.default_rng(0).normal(0, 3, (3, 20))
    x = centres[y - 10] + rng.normal(0, 2.0, (n, 20))
    x = 50 * (x + shift)
    np.savez(path, X=x.astype(np.float32), y=y)


def test_da_stage_runs_registers_per_pair_and_skips_absent_data(project, harness):
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["data"]["sources"]["syndigits"].update(n_train=600, n_test=100)
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    # usps.h5 is at ../shared/data relative to the project: absent here, so it is skipped
    prepare_all(load_params("params.yaml"), ["syndigits", "mnist", "usps"], log=lambda m: None)
    # the smoke profile drops mnist2usps (null): put it back to see it skipped
    out = run_da([*TINY, "da.pairs.mnist2usps={source: mnist, target: usps, side: 16}"])
    client = MlflowClient()
    exp = client.get_experiment_by_name(EXPERIMENT)
    stage = client.get_run(out["run_id"])
    assert "usps.h5" in stage.data.tags["adaptflow.da.skipped.mnist2usps"]
    children = client.search_runs(
        [exp.experiment_id], f"tags.mlflow.parentRunId = '{out['run_id']}'"
    )
    per_run = {
        (r.data.tags["adaptflow.method"], r.data.tags["adaptflow.seed"]): r
        for r in children
        if "adaptflow.method" in r.data.tags
    }
    cfg = load_params("params.yaml", TINY).da
    assert set(per_run) == {(m, str(s)) for m in cfg.methods for s in cfg.seeds}
    for (method, _), r in per_run.items():
        assert r.data.tags["adaptflow.pair"] == "syn2mnist"
        assert r.data.tags["adaptflow.uses_target_labels"] == str(method == "target_oracle").lower()
        assert "target labels select nothing" in r.data.tags["adaptflow.selection_protocol"]
        for key in ("da/target_acc", "da/source_test_acc", "da/pad", "da/mmd", "da/chosen_dev"):
            assert np.isfinite(r.data.metrics[key])
        # the summary's chosen score is the chosen candidate's point of the pick curve, whose
        # steps run grid point after grid point (mcc has a 2-point grid in smoke)
        curve = {m.step: m.value for m in client.get_metric_history(r.info.run_id, "da/pick_dev")}
        n_points = len(cfg.grid.get(method, {}).get("weight", [None]))
        assert len(curve) == cfg.checkpoints * n_points
        if method != "target_oracle":  # the oracle keeps its last checkpoint, whatever its score
            assert r.data.metrics["da/chosen_dev"] == pytest.approx(min(curve.values()))
    report = mlflow.artifacts.load_text(f"runs:/{out['artifact_run_id']}/da/report.md")
    assert "## mnist2usps: skipped" in report and "usps.h5" in report
    assert "| syn2mnist: dann beats source-only (target acc) |" in report
    # one gated model for the pair that ran, under its own alias; it predicts 10 classes
    m = out["models"]["syn2mnist"]
    assert m["decision"] == "champion" and "mnist2usps" not in out["models"]
    version = client.get_model_version_by_alias("adaptflow-smoke-da", "champion-syn2mnist")
    assert str(version.version) == m["version"] and version.tags["method"] != "target_oracle"
    net = mlflow.pytorch.load_model("models:/adaptflow-smoke-da@champion-syn2mnist")
    assert net(torch.rand(3, 1, 16, 16)).shape == (3, 10)


def test_a_users_feature_vector_files_adapt_end_to_end(project, harness):
    user_vectors(project / "src.npz", 0.0, 1)
    user_vectors(project / "tgt.npz", 1.5, 2)
    raw = yaml.safe_load((project / "params.yaml").read_text())
    for name in ("src", "tgt"):
        raw["data"]["sources"][name] = {
            "kind": "npz",
            "path": f"{name}.npz",
            "x_key": "X",
            "y_key": "y",
            "layout": "vector",
        }
    mine = {"source": "src", "target": "tgt", "standardize": "per_domain",
            "protocol": "transductive"}  # fmt: skip
    raw["da"]["pairs"] = raw["profiles"]["smoke"]["da"]["pairs"] = {"mine": mine}
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    prepare_all(load_params("params.yaml"), ["src", "tgt"], log=lambda m: None)
    out = run_da([*TINY, "da.methods=[source_only, coral]"])
    stage = MlflowClient().get_run(out["run_id"])
    assert stage.data.tags["adaptflow.da.mine.protocol"] == "transductive"
    assert "per_domain" in stage.data.tags["adaptflow.da.mine.preprocessing"]
    net = mlflow.pytorch.load_model("models:/adaptflow-smoke-da@champion-mine")
    assert net[1].net[0].in_features == 20  # the MLP featurizer on 20-D vectors
    # the served model z-scores raw target vectors itself (per_domain: the target's statistics)
    raw = np.load(project / "tgt.npz")
    with torch.no_grad():
        pred = net(torch.from_numpy(raw["X"])).argmax(1).numpy()
    assert (pred == raw["y"] - 10).mean() > 0.9
    # per-domain z-scores undo the move and scale of this shift (measured: 1.0 for both)
    assert out["metrics"]["da/mine/source_only/target_acc_mean"] > 0.9
