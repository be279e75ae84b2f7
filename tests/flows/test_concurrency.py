"""Two pipelines started at once on one local store (sqlite) and one PREFECT_HOME: both finish,
every run and registered version is recorded and reads back, and the registry gate decided one
after the other (the second version was compared with the first): the second pipeline was seen
waiting for the gate lock while the first held it, and entered only after the first left."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.flows.pipeline_procs import client_of, read_everything_back, start, stop_tree

# different pretraining lengths: different gate values, so the order of the gates matters
ARGS = {
    "short": ["--stage", "pretrain", "--set", "pretrain.pretrain.epochs=1"],
    "long": ["--stage", "pretrain", "--set", "pretrain.pretrain.epochs=3"],
}
NAME = "adaptflow-smoke-pretrain"
TIMEOUT = 600.0  # seconds for each step the test waits for (a smoke pipeline takes ~1 min)
GRACE = 3.0  # seconds the second must stay out of the gate the first holds

# Injected into both pipelines (sitecustomize): wraps the gate's lock (`store_lock("gate-…")`,
# looked up by stages.base at call time) to append to <barrier>/events "waiting <pid>" just
# before acquiring it, "arrived <pid>" once inside and "leaving <pid>" just before releasing it.
# Inside, it holds until the test creates <barrier>/go: the test sees one pipeline inside and the
# other waiting at the same time, so the two gates certainly overlap.
BARRIER = """
import contextlib, os, pathlib, time
import adaptflow.tracking.store as store
_real = store.store_lock
_folder = pathlib.Path(os.environ["ADAPTFLOW_TEST_BARRIER"])
def _say(what):
    fd = os.open(_folder / "events", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{what} {os.getpid()}\\n".encode())
    finally:
        os.close(fd)
@contextlib.contextmanager
def store_lock(name, root=None):
    if not name.startswith("gate-"):
        with _real(name, root) as held:
            yield held
        return
    _say("waiting")
    with _real(name, root) as held:
        _say("arrived")
        while not (_folder / "go").exists():
            time.sleep(0.1)
        try:
            yield held
        finally:
            _say("leaving")
store.store_lock = store_lock
"""


def _events(barrier) -> list[tuple[str, int]]:
    path = barrier / "events"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(what, int(pid)) for what, pid in (line.split() for line in lines)]


def _wait_until(seen, what: str, barrier, procs) -> list[tuple[str, int]]:
    """The barrier's events once `seen(events)` holds; fails when a pipeline ends first or after
    TIMEOUT."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        events = _events(barrier)
        if seen(events):
            return events
        for k, p in procs.items():
            if p.poll() is not None:
                said = p.stdout.read()
                pytest.fail(f"pipeline {k} ended ({p.returncode}) before {what}: {events}\n{said}")
        time.sleep(0.2)
    pytest.fail(f"not seen within {TIMEOUT:.0f} s: {what}; events {_events(barrier)}")


def _pids(events, what: str) -> list[int]:
    return [pid for w, pid in events if w == what]


def _meet_at_the_gate(barrier, procs) -> tuple[int, int]:
    """Until one pipeline is inside the gate and the other waits for its lock; checks that the
    other stays out, then lets them go. Returns (first pid, second pid)."""
    events = _wait_until(
        lambda ev: _pids(ev, "arrived") and len(set(_pids(ev, "waiting"))) == 2,
        "one pipeline inside the gate and the other at its lock",
        barrier,
        procs,
    )
    inside = _pids(events, "arrived")
    assert len(inside) == 1, f"both inside the gate at once (the lock did not hold): {events}"
    waiting = [p for p in _pids(events, "waiting") if p != inside[0]]
    time.sleep(GRACE)
    events = _events(barrier)
    assert _pids(events, "arrived") == inside, (
        f"pid {waiting[0]} entered the gate pid {inside[0]} holds (the lock did not hold): {events}"
    )
    (barrier / "go").touch()
    return inside[0], waiting[0]


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
    try:
        inside, waited = _meet_at_the_gate(barrier, procs)
        said = {k: p.communicate(timeout=900)[0] for k, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:  # the test failed while they were running
                stop_tree(p, signal.SIGKILL)
    for k, p in procs.items():
        assert p.returncode == 0, said[k]
        # what the race used to print: two temporary Prefect servers migrating one database
        assert "Application startup failed" not in said[k], said[k]
        assert "Traceback" not in said[k], said[k]
    # the gates ran in the two pipelines themselves, once each; the second entered only after
    # the first left
    assert {inside, waited} == {p.pid for p in procs.values()}
    assert _events(barrier) == [
        ("waiting", inside),
        ("arrived", inside),
        ("waiting", waited),
        ("leaving", inside),
        ("arrived", waited),
        ("leaving", waited),
    ], _events(barrier)

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
    holder = str(client.get_model_version_by_alias(NAME, "champion").version)
    assert holder == ("2" if second["gate.decision"] == "champion" else "1")
    counted = read_everything_back(client, prepared_mnist)
    assert counted["versions"] == 2 and counted["runs"] == 2 * (2 + len(per_pipeline[0]))
