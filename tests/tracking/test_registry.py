"""The registry gate: champion earned on the same data/shape/split, decisions as tags, errors."""

from __future__ import annotations

import math

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    PERMISSION_DENIED,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
)
from mlflow.tracking import MlflowClient

from adaptflow.config import load_params
from adaptflow.stages.base import execute
from adaptflow.tracking import models
from adaptflow.tracking.models import CHALLENGER, CHAMPION, decide
from adaptflow.tracking.store import configure
from tests.tracking.toy import CONTEXT, METRIC, context, toy_stage

NAME = "adaptflow-ae"


def champ(value: float, **overrides) -> tuple[str, dict]:
    tags = {"gate.metric": METRIC, "gate.value": repr(value)}
    tags |= {f"gate.{k}": v for k, v in (CONTEXT | overrides).items()}
    return "3", tags


@pytest.mark.parametrize(
    ("value", "higher", "margin", "decision"),
    [
        (0.09, False, 0.0, CHAMPION),  # lower MSE beats 0.10
        (0.11, False, 0.0, CHALLENGER),
        (0.10, False, 0.0, CHALLENGER),  # a tie earns nothing
        (0.095, False, 0.01, CHALLENGER),  # better, but not by more than the margin
        (0.085, False, 0.01, CHAMPION),
        (0.11, True, 0.0, CHAMPION),  # the direction flips the rule
        (0.09, True, 0.0, CHALLENGER),
    ],
)
def test_gate_compares_in_the_stage_direction_beyond_the_margin(value, higher, margin, decision):
    got = decide(METRIC, value, higher, margin, CONTEXT, champ(0.10))
    assert got.decision == decision
    assert got.champion_version == "3" and got.champion_value == 0.10


@pytest.mark.parametrize("key", ["dataset_digest", "input_shape", "val_split"])
def test_a_better_value_on_other_data_is_not_comparable(key):
    got = decide(METRIC, 0.01, False, 0.0, CONTEXT, champ(0.10, **{key: "other"}))
    assert got.decision == CHALLENGER
    assert got.reason.startswith(f"not comparable: different {key}")


def test_model_interface_must_match_and_be_known():
    other = decide(METRIC, 0.01, False, 0.0, CONTEXT, champ(0.10, model="ae-mlp-code16"))
    assert other.decision == CHALLENGER
    assert other.reason.startswith("not comparable: different model")
    _, old_tags = champ(0.10)
    del old_tags["gate.model"]  # a version registered before the key existed
    old = decide(METRIC, 0.01, False, 0.0, CONTEXT, ("3", old_tags))
    assert old.decision == CHALLENGER
    assert old.reason.startswith("not comparable: model interface unknown")
    ours = {k: v for k, v in CONTEXT.items() if k != "model"}  # a stage that does not declare it
    assert decide(METRIC, 0.01, False, 0.0, ours, champ(0.10)).decision == CHALLENGER
    assert decide(METRIC, 0.01, False, 0.0, CONTEXT, champ(0.10)).decision == CHAMPION


def test_no_champion_or_an_ungated_one_gives_the_alias():
    assert decide(METRIC, 5.0, False, 0.0, CONTEXT, None).decision == CHAMPION
    legacy = decide(METRIC, 5.0, False, 0.0, CONTEXT, ("1", {}))  # registered before the gate
    assert legacy.decision == CHAMPION and "predates the gate" in legacy.reason


def versions(client, name=NAME):
    return {str(v.version): v.tags for v in client.search_model_versions(f"name='{name}'")}


def test_execute_registers_through_the_gate(project, monkeypatch):
    """v1 champion; worse v2 challenger; better v3 champion; better-but-other-split v4 not
    comparable; a NaN gate value is never registered. Every decision is in the version's tags."""
    other = CONTEXT | {"val_split": "v1"}
    values = [0.10, 0.20, 0.05, 0.01, math.nan]
    toy_stage(monkeypatch, values, [CONTEXT, CONTEXT, CONTEXT, other, CONTEXT])
    params = load_params("params.yaml", ["ae.epochs=1"])
    exp = configure(".", params.experiment)
    client = MlflowClient()
    decisions = []
    for _ in values:
        out = execute("ae", params, context(project, exp, force=True))
        decisions.append((out.model_version, out.model_decision))
        run_tags = client.get_run(out.run_id).data.tags
        assert run_tags.get("adaptflow.model_decision") == out.model_decision
    assert decisions == [
        ("1", CHAMPION),
        ("2", CHALLENGER),
        ("3", CHAMPION),
        ("4", CHALLENGER),
        (None, "not registered"),
    ]
    tags = versions(client)
    assert sorted(tags) == ["1", "2", "3", "4"]  # the NaN run left no version
    assert tags["1"]["gate.champion_value"] == "none"
    assert tags["2"]["gate.value"] == "0.2" and tags["2"]["gate.champion_value"] == "0.1"
    assert tags["2"]["gate.reason"].startswith("worse or not better")
    assert tags["3"]["gate.champion_version"] == "1" and tags["3"]["gate.decision"] == CHAMPION
    assert tags["4"]["gate.reason"].startswith("not comparable: different val_split")
    assert tags["4"]["gate.val_split"] == "v1" and tags["4"]["gate.dataset_digest"] == "d0"
    assert {t["gate.metric"] for t in tags.values()} == {METRIC}
    assert {t["gate.direction"] for t in tags.values()} == {"lower"}
    assert str(client.get_model_version_by_alias(NAME, CHAMPION).version) == "3"


@pytest.mark.parametrize("dropped", [METRIC, "ae/test_mse"])
def test_a_missing_gate_or_headline_metric_is_never_registered(project, monkeypatch, dropped):
    """A stage summary may drop a non-finite value: absence is a failure, not a pass."""
    metrics = {METRIC: 0.1, "ae/test_mse": 0.1}
    del metrics[dropped]
    toy_stage(monkeypatch, [metrics])
    params = load_params("params.yaml")
    out = execute("ae", params, context(project, configure(".", params.experiment)))
    assert (out.model_version, out.model_decision) == (None, "not registered")
    assert f"'{dropped}': 'missing'" in out.model_decision_reason
    assert versions(MlflowClient()) == {}


@pytest.mark.parametrize("failing", ["record_artifacts", "set_model_tags"])
def test_a_step_failing_after_run_leaves_no_champion(project, monkeypatch, failing):
    """The manifest is written before registering (its failure leaves no version); the alias is
    set after the run's model tags (their failure leaves a version that claims nothing)."""
    from adaptflow.tracking import runs

    toy_stage(monkeypatch, [0.1])
    params = load_params("params.yaml")
    exp = configure(".", params.experiment)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(runs, failing, broken)
    with pytest.raises(OSError, match="disk full"):
        execute("ae", params, context(project, exp))
    assert models.champion(NAME) is None
    assert len(versions(MlflowClient())) == (0 if failing == "record_artifacts" else 1)
    if failing == "set_model_tags":  # the orphan version is marked, never a gated result
        (tags,) = versions(MlflowClient()).values()
        assert tags["gate.decision"] == "aborted" and "disk full" in tags["gate.reason"]
        assert models.best_gated(NAME, METRIC, False, CONTEXT) is None


def test_margin_is_read_from_the_stage_params(project, monkeypatch):
    toy_stage(monkeypatch, [0.10, 0.09])
    params = load_params("params.yaml", ["ae.gate_margin=0.05"])
    exp = configure(".", params.experiment)
    first = execute("ae", params, context(project, exp))
    second = execute("ae", params, context(project, exp, force=True))
    assert (first.model_decision, second.model_decision) == (CHAMPION, CHALLENGER)
    assert "margin 0.05" in second.model_decision_reason


@pytest.mark.parametrize(
    "code",
    # INVALID_PARAMETER_VALUE is what a missing *alias* raises, but also a malformed request:
    # from get_registered_model it is an error, never "no champion"
    [PERMISSION_DENIED, TEMPORARILY_UNAVAILABLE, INVALID_PARAMETER_VALUE],
)
def test_missing_registered_model_means_no_champion_but_other_errors_propagate(
    project, monkeypatch, code
):
    configure(".", "x")
    assert models.champion("never-registered") is None  # RESOURCE_DOES_NOT_EXIST

    def down(self, name):
        raise MlflowException("registry refused", code)

    toy_stage(monkeypatch, [0.1])
    params = load_params("params.yaml")
    exp = configure(".", params.experiment)
    monkeypatch.setattr(MlflowClient, "get_registered_model", down)
    with pytest.raises(MlflowException, match="registry refused"):
        execute("ae", params, context(project, exp))
    monkeypatch.undo()
    assert versions(MlflowClient()) == {}  # nothing registered without a decision


def test_without_an_alias_a_new_version_must_beat_the_best_comparable_gated_one(
    project, monkeypatch
):
    """The alias is gone but gated versions exist: a new version is compared with the best of
    them (same context), not handed the alias. (mlflow raises INVALID_PARAMETER_VALUE for a
    missing alias in get_model_version_by_alias, so champion() reads the model's aliases.)"""
    other = CONTEXT | {"val_split": "v9"}
    toy_stage(monkeypatch, [0.20, 0.10, 0.30, 0.15, 0.50], [CONTEXT] * 4 + [other])
    params = load_params("params.yaml")
    exp = configure(".", params.experiment)
    client = MlflowClient()
    got = []
    for i in range(5):
        if i in (2, 3, 4):
            client.delete_registered_model_alias(NAME, CHAMPION)
            assert models.champion(NAME) is None
        out = execute("ae", params, context(project, exp, force=True))
        got.append((out.model_version, out.model_decision))
    assert got == [
        ("1", CHAMPION),
        ("2", CHAMPION),  # 0.10 beats 0.20
        ("3", CHALLENGER),  # no alias; worse than the best gated v2 (0.10)
        ("4", CHALLENGER),  # no alias; 0.15 beats v1 and v3 but not v2
        ("5", CHAMPION),  # no alias and nothing comparable on its split
    ]
    tags = versions(client)
    assert tags["3"]["gate.champion_version"] == "2" and tags["4"]["gate.champion_version"] == "2"
    assert tags["3"]["gate.reason"].startswith("no champion alias; compared with the best")
    assert tags["5"]["gate.champion_version"] == "none"


def test_is_missing_only_for_not_found_codes():
    assert models.is_missing(MlflowException("x", RESOURCE_DOES_NOT_EXIST))
    assert not models.is_missing(MlflowException("x", PERMISSION_DENIED))


@pytest.mark.parametrize(
    ("ours", "theirs", "decision", "holder"),
    [(0.05, 0.01, CHALLENGER, "3"), (0.01, 0.05, CHAMPION, "2")],
    ids=["theirs-better", "ours-still-better"],
)
def test_a_version_is_decided_again_when_the_alias_moved_meanwhile(
    project, monkeypatch, ours, theirs, decision, holder
):
    """Between a version's decision and its alias step another client (a tracking server's
    clients share no lock) moves the alias to v3: v2 takes the alias only if it beats v3."""
    from adaptflow.stages import base

    toy_stage(monkeypatch, [0.10, ours])
    params = load_params("params.yaml")
    exp = configure(".", params.experiment)
    execute("ae", params, context(project, exp))  # v1 champion at 0.10
    real = base._register

    def then_another_client_moves_it(spec, params, outcome, label, metric, uri, *rest):
        got = real(spec, params, outcome, label, metric, uri, *rest)  # v2 beats v1
        other = models.register_gated(uri, NAME, METRIC, theirs, False, 0.0, CONTEXT)  # v3
        models.set_champion(NAME, other.version)
        return got

    monkeypatch.setattr(base, "_register", then_another_client_moves_it)
    out = execute("ae", params, context(project, exp, force=True))
    assert (out.model_version, out.model_decision) == ("2", decision)
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(NAME, CHAMPION).version) == holder
    assert client.get_run(out.run_id).data.tags["adaptflow.model_decision"] == decision
    tags = versions(client)
    assert tags["2"]["gate.decision"] == decision
    if decision == CHALLENGER:
        assert out.model_decision_reason.startswith("re-decided: the alias moved")
        assert tags["2"]["gate.champion_version"] == "3"


def test_a_registration_refused_after_it_committed_is_not_registered_twice(project, monkeypatch):
    """mlflow.register_model commits the version before its last write; a `database is locked`
    there must not make a second version on the retry."""
    import sqlite3

    import mlflow

    from adaptflow import retry

    monkeypatch.setattr(retry.time, "sleep", lambda s: None)
    real = mlflow.register_model
    calls = []

    def commits_then_refused(*args, **kwargs):
        calls.append(real(*args, **kwargs))
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")
        return calls[-1]

    monkeypatch.setattr(mlflow, "register_model", commits_then_refused)
    toy_stage(monkeypatch, [0.10])
    params = load_params("params.yaml")
    out = execute("ae", params, context(project, configure(".", params.experiment)))
    assert (out.model_version, out.model_decision) == ("1", CHAMPION)
    assert len(calls) == 1 and sorted(versions(MlflowClient())) == ["1"]
