"""Two pipelines started at once on one local store (sqlite) and one PREFECT_HOME: both finish,
every run and registered version is recorded and reads back, and the registry gate decided one
after the other (the second version was compared with the first)."""

from __future__ import annotations

import os
import time

import pytest

from tests.flows.pipeline_procs import client_of, read_everything_back, start

# different pretraining lengths: different gate values, so the order of the gates matters
ARGS = {
    "short": ["--stage", "pretrain", "--set", "pretrain.pretrain.epochs=1"],
    "long": ["--stage", "pretrain", "--set", "pretrain.pretrain.epochs=3"],
}
NAME = "adaptflow-smoke-pretrain"


# Injected into both pipelines (sitecustomize): each says when it reaches the registry gate and
# waits there for the test's go. With the gate lock the second cannot arrive (it waits for the
# lock: the test says go after a while); without it both arrive and decide at once.
BARRIER = """
import os, pathlib, time
import adaptflow.tracking.models as m
_real = m.register_gated
def register_gated(*args, **kwargs):
    folder = pathlib.Path(os.environ["ADAPTFLOW_TEST_BARRIER"])
    (folder / f"arrived-{os.getpid()}").touch()
    while not (folder / "go").exists():
        time.sleep(0.1)
    return _real(*args, **kwargs)
m.register_gated = register_gated
"""


@pytest.mark.slow
def test_two_pipelines_at_once_both_finish_and_the_gate_decides_in_turn(
    project, prepared_mnist, tmp_path_factory
):
    inject = tmp_path_factory.mktemp("inject")
    (inject / "sitecustomize.py").write_text(BARRIER)
    barrier = tmp_path_factory.mktemp("barrier")
    env = {
        "PYTHONPATH": os.pathsep.join([str(inject), os.environ.get("PYTHONPATH", "")]),
        "ADAPTFLOW_TEST_BARRIER": str(barrier),
    }
    procs = {k: start(project, prepared_mnist, *a, env=env) for k, a in ARGS.items()}
    deadline = time.monotonic() + 600
    while len(list(barrier.glob("arrived-*"))) < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    # the other pipeline: at the gate too (no lock), or waiting for the lock (it cannot arrive)
    time.sleep(20)
    (barrier / "go").touch()
    said = {k: p.communicate(timeout=900)[0] for k, p in procs.items()}
    for k, p in procs.items():
        assert p.returncode == 0, said[k]
        # what the race used to print: two temporary Prefect servers migrating one database
        assert "Application startup failed" not in said[k], said[k]
        assert "Traceback" not in said[k], said[k]

    client = client_of(project)
    exps = [e.experiment_id for e in client.search_experiments()]
    pipelines = client.search_runs(exps, "attributes.run_name = 'pipeline-smoke'")
    assert len(pipelines) == 2 and {r.info.status for r in pipelines} == {"FINISHED"}
    per_pipeline = []
    for parent in pipelines:
        stage = client.search_runs(exps, f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
        assert [r.info.run_name for r in stage] == ["pretrain"]
        units = client.search_runs(
            exps, f"tags.`mlflow.parentRunId` = '{stage[0].info.run_id}'", max_results=1000
        )
        per_pipeline.append(sorted(r.info.run_name for r in units))
        assert units and {r.info.status for r in units} == {"FINISHED"}
    assert per_pipeline[0] == per_pipeline[1]  # the same runs recorded for both

    versions = {str(v.version): v.tags for v in client.search_model_versions(f"name = '{NAME}'")}
    assert sorted(versions) == ["1", "2"]
    first, second = versions["1"], versions["2"]
    # gated in turn: v1 met no champion, v2 was compared with v1 (a race: both "no champion")
    assert first["gate.decision"] == "champion" and first["gate.champion_version"] == "none"
    assert second["gate.champion_version"] == "1", second
    assert float(second["gate.champion_value"]) == float(first["gate.value"])
    assert len(list(barrier.glob("arrived-*"))) == 2  # both went through the barrier
    holder = str(client.get_model_version_by_alias(NAME, "champion").version)
    assert holder == ("2" if second["gate.decision"] == "champion" else "1")
    counted = read_everything_back(client, prepared_mnist)
    assert counted["versions"] == 2 and counted["runs"] == 2 * (2 + len(per_pipeline[0]))
