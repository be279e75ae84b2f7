"""The cache key holds what changes results and nothing else; a hit needs its artifacts intact."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils.file_utils import local_file_uri_to_path

from adaptflow.config import load_params
from adaptflow.stages import base
from adaptflow.stages.base import cache_key, code_version, execute
from adaptflow.tracking.runs import TAG_FROM, TAG_MISS
from adaptflow.tracking.store import configure
from tests.conftest import REPO
from tests.tracking.toy import context, toy_stage

DIGESTS = {"mnist": "a" * 32}


def key(overrides=(), stage="ae", digests=DIGESTS, upstream=None, device="cpu") -> str:
    params = load_params(REPO / "params.yaml", list(overrides))
    return cache_key(stage, params, digests, upstream or {}, device)


@pytest.mark.parametrize(
    "change",
    [
        {"overrides": ["seed=1"]},
        {"overrides": ["ae.lr=0.002"]},
        {"overrides": ["ae.options.vae.beta=2.0"]},  # a nested method option
        {"overrides": ["ae.amp=false"]},
        {"overrides": ["registry_prefix=other"]},  # a hit would name the model under the old one
        {"digests": {"mnist": "b" * 32}},
        {"upstream": {"ae": "k2"}},
        {"device": "cuda"},
        {"stage": "pretrain"},
    ],
    ids=lambda c: str(c),
)
def test_what_changes_results_changes_the_key(change):
    assert key(**change) != key()


@pytest.mark.parametrize(
    "knob", ["ae.log_every=7", "ae.tsne_points=10", "ae.gate_margin=0.5", "pretrain.epochs=3"]
)
def test_display_knobs_and_other_stages_leave_the_key_alone(knob):
    assert key([knob]) == key()


def test_device_index_does_not_matter_but_type_does():
    assert key(device="cuda:0") == key(device="cuda:1") != key(device="cpu")


def test_code_and_library_versions_change_the_key(monkeypatch):
    before = key()
    monkeypatch.setattr(base, "code_version", lambda: "other")
    assert key() != before
    monkeypatch.undo()
    versions = {**base.library_versions(), "torch": "0.0"}
    monkeypatch.setattr(base, "library_versions", lambda: versions)
    assert key() != before


def test_code_version_sees_an_edit(tmp_path):
    pkg = tmp_path / "pkg"
    shutil.copytree(Path(base.__file__).parents[1], pkg)
    first = code_version(pkg)
    assert code_version(pkg) == first
    target = pkg / "losses" / "sparsity.py"
    target.write_text(target.read_text() + "\n# an edit\n")
    assert code_version(pkg) != first


def artifact_dir(client, run_id) -> Path:
    return Path(local_file_uri_to_path(client.get_run(run_id).info.artifact_uri))


def test_a_hit_whose_artifacts_or_model_are_gone_recomputes(project, monkeypatch):
    calls = toy_stage(monkeypatch, [0.1, 0.1, 0.1, 0.1])
    params = load_params("params.yaml")
    exp = configure(".", params.experiment)
    client = MlflowClient()

    first = execute("ae", params, context(project, exp))
    hit = execute("ae", params, context(project, exp))
    assert (first.cache_hit, hit.cache_hit, len(calls)) == (False, True, 1)
    assert hit.metrics == first.metrics and hit.model_version == first.model_version == "1"
    assert hit.model_decision == "champion"
    assert client.get_run(hit.run_id).data.tags[TAG_FROM] == first.run_id

    (artifact_dir(client, first.run_id) / "ae" / "report.md").unlink()
    second = execute("ae", params, context(project, exp))
    assert not second.cache_hit and len(calls) == 2
    assert (
        "lost 1 artifact(s), e.g. ae/report.md" in client.get_run(second.run_id).data.tags[TAG_MISS]
    )

    model_dir = client.get_logged_model(second.model_uri.split("/")[-1]).artifact_location
    shutil.rmtree(local_file_uri_to_path(model_dir))
    third = execute("ae", params, context(project, exp))
    assert not third.cache_hit and len(calls) == 3
    assert "model models:/" in client.get_run(third.run_id).data.tags[TAG_MISS]

    client.delete_model_version(third.model_name, third.model_version)
    fourth = execute("ae", params, context(project, exp))
    assert not fourth.cache_hit and len(calls) == 4
    assert "was deleted" in client.get_run(fourth.run_id).data.tags[TAG_MISS]
    assert execute("ae", params, context(project, exp)).cache_hit  # intact again: a hit


def test_a_hit_reports_the_registry_as_it_is_now(project, monkeypatch):
    """v1 was champion when computed; another config's v2 took the alias since: a hit of v1 must
    not replay the stale "champion" decision."""
    calls = toy_stage(monkeypatch, [0.2, 0.1])
    params = load_params("params.yaml")
    exp = configure(".", params.experiment)
    first = execute("ae", params, context(project, exp))
    other = execute("ae", load_params("params.yaml", ["ae.lr=0.002"]), context(project, exp))
    assert (first.model_decision, other.model_decision) == ("champion", "champion")
    hit = execute("ae", params, context(project, exp))
    assert hit.cache_hit and len(calls) == 2 and hit.model_version == "1"
    assert hit.model_decision == "challenger (champion moved to v2)"
    assert "at registration: no champion" in hit.model_decision_reason
    tags = MlflowClient().get_run(hit.run_id).data.tags
    assert tags["adaptflow.model_decision"] == hit.model_decision
