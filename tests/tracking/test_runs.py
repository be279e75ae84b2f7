"""Curves are written in batches but never lost: every stepped value is in the store once its
run ends, normally or by an exception."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from adaptflow.tracking import runs
from adaptflow.tracking.store import configure


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    configure(".", "curves")


def history(run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in MlflowClient().get_metric_history(run_id, key))


def test_stepped_metrics_are_batched_and_flushed_when_the_run_ends(store, monkeypatch):
    monkeypatch.setattr(runs, "FLUSH_SECONDS", 3600.0)  # nothing flushes on time in this test
    with runs.run("curve") as active:
        rid = active.info.run_id
        for step in range(1, 6):
            runs.log_metrics({"loss": 1.0 / step, "acc": step / 10}, step=step)
        assert history(rid, "loss") == [(1, 1.0)]  # the first value goes out at once
        runs.log_metrics({"final": 0.5})  # unstepped: written at once
        assert mlflow.get_run(rid).data.metrics["final"] == 0.5
    assert history(rid, "loss") == [(s, 1.0 / s) for s in range(1, 6)]
    assert history(rid, "acc") == [(s, s / 10) for s in range(1, 6)]
    assert rid not in runs._pending and rid not in runs._flushed_at  # no state left per run


def test_a_failed_run_keeps_its_curve_up_to_the_failure(store, monkeypatch):
    monkeypatch.setattr(runs, "FLUSH_SECONDS", 3600.0)
    with pytest.raises(RuntimeError), runs.run("crash") as active:
        rid = active.info.run_id
        for step in range(1, 4):
            runs.log_metrics({"loss": float(step)}, step=step)
        raise RuntimeError("diverged")
    assert history(rid, "loss") == [(1, 1.0), (2, 2.0), (3, 3.0)]
    assert mlflow.get_run(rid).info.status == "FAILED"
    assert rid not in runs._pending and rid not in runs._flushed_at


def test_nested_runs_keep_their_own_curves(store, monkeypatch):
    monkeypatch.setattr(runs, "FLUSH_SECONDS", 3600.0)
    with runs.run("parent") as parent:
        for step in (1, 2):
            runs.log_metrics({"loss": float(step)}, step=step)
            with runs.run(f"child{step}") as child:
                runs.log_metrics({"loss": 10.0 + step}, step=step)
                runs.log_metrics({"loss": 20.0 + step}, step=step + 1)
            assert history(child.info.run_id, "loss") == [
                (step, 10.0 + step),
                (step + 1, 20.0 + step),
            ]
    assert history(parent.info.run_id, "loss") == [(1, 1.0), (2, 2.0)]


def test_with_a_zero_interval_every_value_is_written_at_once(store, monkeypatch):
    monkeypatch.setattr(runs, "FLUSH_SECONDS", 0.0)
    with runs.run("live") as active:
        for step in range(1, 4):
            runs.log_metrics({"loss": float(step)}, step=step)
            assert history(active.info.run_id, "loss")[-1] == (step, float(step))


# ---------------------------------------------------------------- stopped processes
def _running(name: str, owner: str) -> str:
    """A run left RUNNING as a killed process leaves it, owned by `owner`."""
    run = mlflow.start_run(run_name=name, tags={runs.TAG_OWNER: owner})
    mlflow.end_run("RUNNING")  # pop it from the active stack without ending it in the store
    MlflowClient().update_run(run.info.run_id, status="RUNNING")
    return run.info.run_id


def test_only_runs_of_dead_processes_on_this_host_are_reaped(store):
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    ids = {
        "dead": _running("dead", runs.owner(int(dead.stdout))),
        "reused pid": _running(
            "reused", f"{socket.gethostname()}:1:999999999999"
        ),  # pid 1 lives, not that one
        "alive": _running("alive", runs.owner()),  # a concurrent pipeline: this process
        "other host": _running("elsewhere", "another-host:1234:99"),
        "untagged": _running("old", "not an owner tag"),
    }
    exp = mlflow.get_run(ids["dead"]).info.experiment_id
    reaped = runs.reap_stale_runs([exp])
    status = {k: MlflowClient().get_run(v).info.status for k, v in ids.items()}
    assert sorted(reaped) == sorted([ids["dead"], ids["reused pid"]]), status
    assert status == {
        "dead": "KILLED",
        "reused pid": "KILLED",
        "alive": "RUNNING",
        "other host": "RUNNING",
        "untagged": "RUNNING",
    }
    assert "ended without closing it" in mlflow.get_run(ids["dead"]).data.tags["adaptflow.error"]


def test_a_stop_ends_open_runs_killed_and_the_unwinding_keeps_them_killed(store, monkeypatch):
    from adaptflow import interrupt

    monkeypatch.setattr(interrupt, "_reason", ["stopped by SIGTERM"])
    with pytest.raises(interrupt.Interrupted), runs.run("stage") as outer:
        with runs.run("stage/unit") as inner:
            interrupt.STOP.set()
            try:
                assert sorted(runs.kill_open_runs("stopped by SIGTERM")) == sorted(
                    [outer.info.run_id, inner.info.run_id]
                )
                assert mlflow.get_run(inner.info.run_id).info.status == "KILLED"  # at once
                interrupt.check()
            finally:
                interrupt.STOP.clear()
    for active in (outer, inner):
        run = mlflow.get_run(active.info.run_id)
        assert run.info.status == "KILLED", run.info.run_name  # not FAILED by the unwinding
        assert "SIGTERM" in run.data.tags["adaptflow.error"]
    assert not runs._open


def _locked(times: list[int], real):
    """A stand-in for an MlflowClient method refused `database is locked` `times[0]` times."""
    import sqlite3

    def call(self, *args, **kwargs):
        if times[0] > 0:
            times[0] -= 1
            raise sqlite3.OperationalError("database is locked")
        return real(self, *args, **kwargs)

    return call


@pytest.mark.parametrize("refusals", [2, 99])
def test_a_refused_run_end_is_retried_and_never_leaves_the_run_on_the_stack(
    store, monkeypatch, refusals
):
    """Two pipelines on one sqlite store: ending a run may meet a locked database. It is
    retried; if it still fails, the run leaves MLflow's active-run stack all the same (else the
    parent's end would end the dead child instead of itself)."""
    from adaptflow import retry

    monkeypatch.setattr(retry.time, "sleep", lambda s: None)
    times = [refusals]
    monkeypatch.setattr(MlflowClient, "set_terminated", _locked(times, MlflowClient.set_terminated))
    with runs.run("parent") as parent:
        if refusals < retry.CALL_ATTEMPTS:
            with runs.run("child") as child:
                pass
            status = MlflowClient().get_run(child.info.run_id).info.status
            assert status == "FINISHED" and times == [0]
        else:
            with pytest.raises(Exception, match="database is locked"):
                with runs.run("child"):
                    pass
            times[0] = 0  # the store is free again
        assert mlflow.active_run().info.run_id == parent.info.run_id
    assert mlflow.active_run() is None
    assert MlflowClient().get_run(parent.info.run_id).info.status == "FINISHED"


def test_a_stepped_image_is_written_before_the_call_returns(store):
    """mlflow.log_image(key=...) queues to a thread per run by default: images still queued are
    lost when the process is killed, and every run's thread is joined at exit (~0.5 s each)."""
    import threading

    import numpy as np

    with runs.run("images") as run:
        runs.log_image_step(np.linspace(0, 1, 64).reshape(8, 8), "gan/samples", 3)
        files = [f.path for f in MlflowClient().list_artifacts(run.info.run_id, "images")]
    assert len(files) == 2 and all("gan~samples+step+3+" in f for f in files), files
    assert {f.rsplit(".", 1)[1] for f in files} == {"png", "webp"}
    queued = [t.name for t in threading.enumerate() if "AsyncArtifacts" in t.name]
    assert not queued, f"mlflow's async artifact threads are running: {queued}"
