"""The whole pipeline on profile=smoke in a temporary project: runs, metrics, registry, cache."""

from __future__ import annotations

import hashlib
import json

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from adaptflow.config import load_params
from adaptflow.data import prepare_all
from adaptflow.stages.base import split_train_val
from adaptflow.tracking.store import configure

EXPERIMENT = "adaptflow-smoke"
SMOKE = [
    "profile=smoke",
    "ae.max_train=300",
    "ae.epochs=1",
    "ae.methods=[pca, ae]",  # the VAE's bounds are tested in tests/losses, its stage path slow
    "ae.anomaly_digit=null",
    "ae.archs=[mlp]",
    "ae.seeds=[0]",  # one seed: verdicts say "not enough seeds"; the paired path has unit tests
    "pretrain.max_train=300",
    "pretrain.lr=0.01",  # 2 epochs x 5 steps at 1e-3 stay at chance; the test wants learning
]


@pytest.fixture
def smoke_project(project, harness):
    prepare_all(load_params("params.yaml"), ["mnist", "digits"], log=lambda m: None)
    return project


def run_pipeline(overrides, force=False, stages=None):
    from flows.pipeline import pipeline_flow

    return pipeline_flow("params.yaml", overrides, ".", force, False, stages)


def children(client, exp_id, parent_id):
    return client.search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")


def version_tags(client, name: str) -> dict[str, dict[str, str]]:
    return {str(v.version): v.tags for v in client.search_model_versions(f"name='{name}'")}


def mse(a, b) -> float:
    return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


IMAGE_STAGES = ["ae", "pretrain"]  # the transfer chain has its own test (test_transfer_chain.py)


def test_pipeline_runs_logs_registers_and_caches(smoke_project, monkeypatch):
    outcomes = run_pipeline(SMOKE, stages=IMAGE_STAGES)
    assert list(outcomes) == ["ae", "pretrain"]
    exp_id = configure(".", EXPERIMENT)
    client = MlflowClient()
    params = load_params("params.yaml", SMOKE)
    data = np.load(smoke_project / "data/prepared/mnist.npz")
    manifest = json.loads((smoke_project / "data/prepared/mnist.json").read_text())

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

    # reconstruction beats the trivial predictor (the mean training image), computed here
    m = ae.data.metrics
    x_te = data["x_test"][: params.ae.max_test]
    mean_image_mse = mse(x_te, data["x_train"].mean(axis=0, keepdims=True))
    assert m["ae/pca/test_mse"] < 0.5 * mean_image_mse
    assert m["ae/test_mse"] < mean_image_mse
    assert parent.data.metrics["ae/test_mse"] == m["ae/test_mse"]
    assert (
        parent.data.metrics["pretrain/test_acc"]
        == stage_runs["pretrain"].data.metrics["pretrain/test_acc"]
    )
    assert ae.data.params["ae.epochs"] == str(params.ae.epochs)
    assert ae.data.tags["adaptflow.git_commit"]

    # the whole prepared training split is the dataset input; digest = the file's md5 (DVC's)
    (ds,) = [d.dataset for d in ae.inputs.dataset_inputs]
    assert (ds.name, ds.digest) == ("mnist", manifest["md5"])
    assert json.loads(ds.profile)["features_shape"] == list(data["x_train"].shape)

    # one nested run per method (and seed) below the ae stage run; figures on the stage run
    methods = {r.data.tags["adaptflow.method"] for r in children(client, exp_id, ae.info.run_id)}
    assert methods == {"pca", "ae"}
    artifacts = {a.path for a in client.list_artifacts(ae.info.run_id, "ae")}
    assert {"ae/comparison.md", "ae/reconstructions.png", "ae/loss_curves.png"} <= artifacts
    table = open(client.download_artifacts(parent.info.run_id, "ae/comparison.md")).read()
    assert "| pca" in table

    # pretrain: fine-tuned greedy net beats always answering the most frequent test class
    pre = stage_runs["pretrain"]
    assert client.download_artifacts(parent.info.run_id, "pretrain/verdict.md")  # on the parent
    majority = np.bincount(data["y_test"]).max() / len(data["y_test"])
    assert pre.data.metrics["pretrain/greedy/f1/test_acc_mean"] > majority + 0.1

    # registry: v1 of each is champion, its gate tags are the stage run's validation metric,
    # and the registered model itself reproduces that value on the validation split
    for stage, metric in (("ae", "ae/gate_val_mse"), ("pretrain", "pretrain/gate_val_acc")):
        name = f"adaptflow-smoke-{stage}"
        tags = version_tags(client, name)["1"]
        assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
        assert outcomes[stage]["model_decision"] == tags["gate.decision"] == "champion"
        assert float(tags["gate.value"]) == stage_runs[stage].data.metrics[metric]
        assert tags["gate.metric"] == metric and tags["gate.champion_value"] == "none"
        assert tags["gate.dataset_digest"] == manifest["md5"]
        assert tags["gate.input_shape"] == "1x28x28"
    assert version_tags(client, "adaptflow-smoke-ae")["1"]["gate.model"] == "ae-mlp-code32"
    assert version_tags(client, "adaptflow-smoke-pretrain")["1"]["gate.model"].startswith("784-")
    _, val = split_train_val(
        len(data["x_train"]), params.ae.val_fraction, params.ae.max_train, params.seed
    )
    ae_tags = version_tags(client, "adaptflow-smoke-ae")["1"]
    val_hash = hashlib.sha256(np.sort(val).astype(np.int64).tobytes()).hexdigest()[:12]
    assert ae_tags["gate.val_split"] == val_hash
    net = mlflow.pytorch.load_model("models:/adaptflow-smoke-ae@champion")
    x_val = data["x_train"][np.sort(val)]
    with torch.no_grad():
        recon = net(torch.from_numpy(x_val)).numpy()
    assert recon.shape == x_val.shape
    assert mse(recon, x_val) == pytest.approx(float(ae_tags["gate.value"]), rel=1e-4)
    clf = mlflow.pytorch.load_model("models:/adaptflow-smoke-pretrain@champion")
    assert clf(torch.from_numpy(x_te[:3])).shape == (3, 10)

    # SMOKE shrinks the profile with --set: the profile's versioned report is not written
    assert not (smoke_project / "reports").exists()

    # an unchanged re-run hits the cache: no training, no new model version
    again = run_pipeline(SMOKE, stages=IMAGE_STAGES)
    assert all(o["cache_hit"] for o in again.values())
    assert again["ae"]["metrics"]["ae/test_mse"] == outcomes["ae"]["metrics"]["ae/test_mse"]
    assert (again["ae"]["model_version"], again["ae"]["model_decision"]) == ("1", "champion")
    assert (
        client.get_run(again["ae"]["run_id"]).data.tags["adaptflow.cached_from"]
        == outcomes["ae"]["run_id"]
    )
    assert len(version_tags(client, "adaptflow-smoke-ae")) == 1

    # the compare view's tags on every run of a stage, and the report over these two runs
    ae_runs = children(client, exp_id, outcomes["ae"]["run_id"])
    methods = [r for r in ae_runs if r.data.tags["adaptflow.kind"] == "method"]
    assert {r.data.tags["adaptflow.method"] for r in methods} == {"pca", "ae"}
    assert all(r.data.tags["adaptflow.stage"] == "ae" for r in ae_runs)
    assert all(r.data.tags["mlflow.note.content"].startswith("ae/") for r in methods)
    from adaptflow import compare

    chosen = compare.pipeline_runs(exp_id, None, last=2)
    newest = client.get_run(again["ae"]["run_id"]).data.tags["mlflow.parentRunId"]
    assert [r.info.run_id for r in chosen] == [parent.info.run_id, newest]
    report = compare.build(chosen).markdown
    assert "## Stage `ae`" in report and "## Stage `pretrain`" in report
    assert f"a cache hit of `{outcomes['ae']['run_id'][:8]}`" in report
    assert "| ae mlp (n=1) |" in report and "| pretrain/test_acc |" in report
    assert "not enough seeds" in report  # the verdict tables, from <stage>/claims.json
    assert "_No param changed._" in report and "_No summary metric moved._" in report

    # --force recomputes ae although nothing changed; its model, made worse on validation
    # here, becomes v2, a challenger with the reason; champion stays on v1
    from adaptflow.stages import STAGES

    spec = STAGES.get("ae")

    def worse(params, ctx, data):
        out = spec.run(params, ctx, data)
        out.metrics["ae/gate_val_mse"] += 1.0
        return out

    def better(params, ctx, data):
        out = spec.run(params, ctx, data)
        out.metrics["ae/gate_val_mse"] = 0.0
        return out

    # (setitem, never monkeypatch.undo(): undo would also leave the temporary project's cwd)
    monkeypatch.setitem(STAGES._items, "ae", type(spec)(**{**spec.__dict__, "run": worse}))
    forced = run_pipeline(SMOKE, force=True, stages=["ae"])["ae"]
    assert not forced["cache_hit"]
    assert (forced["model_version"], forced["model_decision"]) == ("2", "challenger")
    v2 = version_tags(client, "adaptflow-smoke-ae")["2"]
    assert v2["gate.reason"].startswith("worse")
    assert v2["gate.champion_value"] == ae_tags["gate.value"]
    assert str(client.get_model_version_by_alias("adaptflow-smoke-ae", "champion").version) == "1"

    # a far better value on other data is not comparable: v3 stays a challenger
    monkeypatch.setitem(STAGES._items, "ae", type(spec)(**{**spec.__dict__, "run": better}))
    other = run_pipeline([*SMOKE, "ae.dataset=digits"], stages=["ae"])["ae"]
    assert (other["model_version"], other["model_decision"]) == ("3", "challenger")
    v3 = version_tags(client, "adaptflow-smoke-ae")["3"]
    assert v3["gate.reason"].startswith("not comparable: different dataset_digest")
    assert str(client.get_model_version_by_alias("adaptflow-smoke-ae", "champion").version) == "1"


def test_only_a_full_run_of_the_profile_as_configured_writes_its_report(smoke_project, monkeypatch):
    """reports/metrics-<profile>.json is versioned: a --stage run or a --set override other than
    profile= must leave it alone (stage flows replaced by instant fakes: this tests the flow)."""
    import flows.pipeline as pipeline

    def fake(name):
        def stage_flow(*args):
            overrides = args[1]
            value = 0.5 if "ae.epochs=1" in overrides else 0.25
            metrics = {f"{name}/test_x": value}
            return {
                "metrics": metrics,
                "cache_hit": False,
                "cache_key": name,
                "models": {},
                "artifact_run_id": f"run-{name}",
            }

        stage_flow.with_options = lambda **options: stage_flow  # the pipeline sets a task runner
        return stage_flow

    monkeypatch.setattr(pipeline, "STAGE_FLOWS", {n: fake(n) for n in pipeline.STAGE_FLOWS})
    monkeypatch.setattr(pipeline, "_check_against_data", lambda params, chosen: None)  # fakes
    report = smoke_project / "reports/metrics-smoke.json"
    run_pipeline(["profile=smoke"])
    written = json.loads(report.read_text())
    assert written == {f"{n}/test_x": 0.25 for n in pipeline.STAGE_FLOWS}
    run_pipeline(["profile=smoke", "ae.epochs=1"])
    run_pipeline(["profile=smoke"], stages=["ae"])
    assert json.loads(report.read_text()) == written
    assert not (smoke_project / "reports/metrics-default.json").exists()  # per profile
    every = list(pipeline.STAGE_FLOWS)
    assert pipeline.report_skip_reason(every, ["profile=smoke", "ae.epochs=1"]) == (
        "--set overrides ['ae.epochs'] change the profile's params"
    )
    assert "other.yaml" in pipeline.report_skip_reason(every, [], "other.yaml")
    assert pipeline.report_skip_reason(every, ["profile=smoke"]) is None
    scheduled = {"adaptflow.prefect_deployment": "adaptflow-pipeline/nightly"}
    assert "a scheduled run" in pipeline.report_skip_reason(every, [], "params.yaml", scheduled)
    assert "only stages" in pipeline.report_skip_reason(IMAGE_STAGES, ["profile=smoke"])


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
        run_pipeline(SMOKE, stages=IMAGE_STAGES)


def test_params_contradicting_the_data_stop_before_any_run(smoke_project):
    from adaptflow.config import ParamsError

    with pytest.raises(ParamsError, match="anomaly_digit"):
        run_pipeline([*SMOKE, "ae.anomaly_digit=12"])  # mnist has 10 classes
    assert not (smoke_project / "mlruns").exists()  # no store, so no run was created


@pytest.mark.parametrize("policy", ["continue", "stop"])
def test_a_diverged_stage_fails_with_its_reason_and_the_pipeline_follows_on_stage_failure(
    smoke_project, policy, monkeypatch
):
    """A loss that turns NaN: that stage's runs FAILED with the reason and no model registered;
    `continue` still runs the stage that does not depend on it, `stop` does not; the error
    carries the summary (what finished, what failed or was not run).

    No learning rate params allow (<= 10) makes a stage NaN here (Adam's steps are bounded,
    the VAE's log-variance, the KL and BCE terms are clamped), so the autoencoder's loss is
    made NaN from its third step on; the trainer, the stage, the gate and the pipeline are
    the real ones."""
    from flows.pipeline import StagesFailed

    from adaptflow.methods.ae.base import TorchAE

    real, calls = TorchAE.reconstruction, []

    def diverging(self, logits, x):
        calls.append(1)
        out = real(self, logits, x)
        return {k: v * float("nan") for k, v in out.items()} if len(calls) > 2 else out

    monkeypatch.setattr(TorchAE, "reconstruction", diverging)
    overrides = [*SMOKE, "ae.methods=[ae]", f"on_stage_failure={policy}"]
    with pytest.raises(StagesFailed) as err:
        run_pipeline(overrides, stages=IMAGE_STAGES)
    failed, outcomes = err.value.failed, err.value.outcomes
    assert set(failed) == ({"ae"} if policy == "continue" else {"ae", "pretrain"})
    assert "NonFiniteLossError" in failed["ae"] and "NaN" in failed["ae"]
    assert set(outcomes) == ({"pretrain"} if policy == "continue" else set())
    if policy == "stop":
        assert failed["pretrain"] == "not run (on_stage_failure: stop)"
    client = MlflowClient()
    exp_id = configure(".", EXPERIMENT)
    runs = client.search_runs([exp_id])
    by_name = {r.info.run_name: r for r in runs}
    assert (
        by_name["ae"].info.status == "FAILED" and by_name["pipeline-smoke"].info.status == "FAILED"
    )
    assert "stage ae failed" in by_name["pipeline-smoke"].data.tags["adaptflow.error"]
    assert "NonFiniteLossError" in by_name["ae"].data.tags["adaptflow.error"]
    units = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == by_name["ae"].info.run_id]
    diverged = [r for r in units if "NonFiniteLossError" in r.data.tags.get("adaptflow.error", "")]
    assert diverged and all(r.info.status == "FAILED" for r in diverged), [
        (r.info.run_name, r.info.status, r.data.tags.get("adaptflow.error")) for r in units
    ]
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    assert ("pretrain" in by_name) == (policy == "continue")
    if policy == "continue":
        assert by_name["pretrain"].info.status == "FINISHED"
    names = {m.name for m in client.search_registered_models()}
    assert "adaptflow-smoke-ae" not in names


def test_the_cli_summary_lists_failed_and_skipped_stages_and_exits_1(smoke_project, monkeypatch):
    from typer.testing import CliRunner

    from adaptflow import cli
    from adaptflow.stages import STAGES

    def boom(*args, **kwargs):
        raise RuntimeError("synthetic failure")

    spec = STAGES.get("ae")
    monkeypatch.setitem(STAGES._items, "ae", type(spec)(**{**spec.__dict__, "run": boom}))
    monkeypatch.setenv("COLUMNS", "200")
    args = ["run", "--no-progress", "--stage", "ae", "--stage", "pretrain"]
    result = CliRunner().invoke(cli.app, [*args, *(a for o in SMOKE for a in ("--set", o))])
    said = " ".join(result.output.split())
    assert result.exit_code == 1, said
    assert "1 stage(s) FAILED or not run" not in said  # two: ae failed, pretrain not run
    assert "2 stage(s) FAILED or not run" in said
    assert "FAILED RuntimeError: synthetic failure" in said
    assert "not run (on_stage_failure: stop)" in said
    assert "error: stage ae failed: RuntimeError: synthetic failure" in said
