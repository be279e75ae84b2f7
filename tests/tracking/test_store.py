"""The local MLflow store: artifact links are relative to the project root, so a moved checkout
still reads its artifacts and registered models."""

from __future__ import annotations

import shutil
import sqlite3

import mlflow
import numpy as np
import pytest
import torch

from adaptflow.tracking.models import log_torch_model
from adaptflow.tracking.store import StoreError, configure


@pytest.fixture(autouse=True)
def _no_user_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # restored after the test


def test_moved_checkout_reads_artifacts_and_models(tmp_path, monkeypatch):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    monkeypatch.chdir(old)
    exp_id = configure(".", "moving")
    assert mlflow.get_experiment(exp_id).artifact_location == f"mlruns/artifacts/{exp_id}"
    net = torch.nn.Linear(3, 2)
    with mlflow.start_run() as run:
        mlflow.log_text("hello", "notes/hi.txt")
        model_uri = log_torch_model(net, np.zeros((2, 3), np.float32))
    version = mlflow.register_model(model_uri, "lin").version
    assert mlflow.get_run(run.info.run_id).info.artifact_uri.startswith("mlruns/artifacts/")
    assert str(old) not in mlflow.get_run(run.info.run_id).info.artifact_uri

    shutil.move(old, new)
    monkeypatch.chdir(new)
    assert configure(".", "moving") == exp_id
    assert mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/notes/hi.txt") == "hello"
    loaded = mlflow.pytorch.load_model(f"models:/lin/{version}")
    x = torch.randn(4, 3)
    torch.testing.assert_close(loaded(x), net(x))


def test_absolute_locations_made_here_become_relative_others_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp_id = configure(".", "legacy")
    custom = mlflow.create_experiment("custom", artifact_location=str(tmp_path / "big-disk"))
    theirs = tmp_path / "other-project" / "mlruns" / "artifacts"  # another store, same shape
    foreign = {
        mlflow.create_experiment("foreign-path", artifact_location=str(theirs)): str(theirs),
        mlflow.create_experiment("foreign-uri", artifact_location=theirs.parent.as_uri()): (
            theirs.parent.as_uri()
        ),
    }
    with sqlite3.connect(tmp_path / "mlruns" / "mlflow.db") as con:  # what the old code stored
        con.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
            ((tmp_path / "mlruns" / "artifacts").as_uri(), int(exp_id)),
        )
    con.close()
    configure(".", "legacy")
    assert mlflow.get_experiment(exp_id).artifact_location == f"mlruns/artifacts/{exp_id}"
    assert mlflow.get_experiment("0").artifact_location == "mlruns/artifacts/0"  # "Default"
    assert mlflow.get_experiment(custom).artifact_location == str(tmp_path / "big-disk")
    for exp, location in foreign.items():
        assert mlflow.get_experiment(exp).artifact_location == location


def test_local_store_only_from_the_project_root(tmp_path, monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(StoreError, match="cd .*chdir to the project root.*MLFLOW_TRACKING_URI"):
        configure(tmp_path, "x")
    assert not (tmp_path / "mlruns").exists()


def test_user_tracking_uri_is_left_alone(tmp_path, monkeypatch):
    """A user's store keeps its own artifact root: only the store we own is rewritten."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'theirs.db'}")
    exp_id = configure(tmp_path / "project-root-unused", "theirs")
    assert mlflow.get_tracking_uri().endswith("theirs.db")
    assert mlflow.get_experiment(exp_id).artifact_location != f"mlruns/artifacts/{exp_id}"
    assert not (tmp_path / "mlruns").exists()


def test_a_tracking_server_that_does_not_answer_fails_in_seconds_without_its_password(
    monkeypatch,
):
    import socket
    import time

    from adaptflow.tracking.store import StoreError, check_server, use_store

    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://team:s3cret@127.0.0.1:{port}")
        t0 = time.monotonic()
        with pytest.raises(StoreError, match="does not answer") as e:
            use_store(".")
        # MLflow's own retries would take minutes: a wide bound, not a speed goal
        assert time.monotonic() - t0 < 60
        assert "s3cret" not in str(e.value) and f"***@127.0.0.1:{port}" in str(e.value)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    check_server()  # the local store: nothing to check


def test_the_store_lock_is_held_across_processes_and_a_stuck_one_is_named(project, monkeypatch):
    """Two pipelines on one local store: the second waits for the first's gate; a lock never
    released ends in an error naming the file and what to do."""
    import subprocess
    import sys
    import textwrap

    from adaptflow.tracking import store

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import sys, time
                from adaptflow.tracking.store import store_lock
                with store_lock("gate-adaptflow-ae"):
                    print("held", flush=True)
                    sys.stdin.readline()
                """
            ),
        ],
        cwd=project,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(store, "LOCK_TIMEOUT", 0.5)
        with pytest.raises(store.StoreError, match=r"gate-adaptflow-ae\.lock.*delete the file"):
            with store.store_lock("gate-adaptflow-ae"):
                pass
        with store.store_lock("gate-adaptflow-other") as locked:  # other names are free
            assert locked
    finally:
        holder.communicate("\n", timeout=30)
    with store.store_lock("gate-adaptflow-ae") as locked:  # released with its holder
        assert locked


def test_a_tracking_server_has_no_store_lock_a_chosen_sqlite_file_has_one_beside_it(
    project, monkeypatch
):
    from adaptflow.tracking import store

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    with store.store_lock("gate-x") as locked:
        assert locked is False
    assert not (project / "mlruns").exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'shared' / 'team.db'}")
    with store.store_lock("gate-x") as locked:
        assert locked and (project / "shared" / ".locks" / "gate-x.lock").exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///rel/team.db")  # relative to the cwd
    with store.store_lock("gate-x") as locked:
        assert locked and (project / "rel" / ".locks" / "gate-x.lock").exists()


def test_a_stuck_prefect_start_exits_1_naming_the_lock(project, prepared_mnist, monkeypatch):
    """Prefect's temporary-server start lock held past its timeout (another process starting,
    or a file left behind): `adaptflow run` exits 1 naming the file and the fix, no traceback."""
    import flows.pipeline
    from filelock import FileLock
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings
    from typer.testing import CliRunner

    from adaptflow.cli import app

    home = project / ".prefect-test"
    home.mkdir()
    real = flows.pipeline.ephemeral_prefect
    monkeypatch.setattr(flows.pipeline, "ephemeral_prefect", lambda: real(timeout=0.5))
    monkeypatch.setattr(flows.pipeline, "pipeline_flow", lambda *a: pytest.fail("flow ran"))
    monkeypatch.setenv("COLUMNS", "400")
    held = FileLock(home / "adaptflow-start.lock", thread_local=False)
    # another open file description: flock conflicts with it even inside this process
    with held, temporary_settings({PREFECT_HOME: str(home), PREFECT_API_URL: None}):
        args = ["run", "--stage", "ae", "--set", f"data.prepared_dir={prepared_mnist}"]
        out = CliRunner().invoke(app, args)
    said = " ".join(out.output.split())
    assert out.exit_code == 1, said
    assert out.exception is None or isinstance(out.exception, SystemExit), out.exception
    assert "adaptflow-start.lock" in said and "delete the file" in said, said
