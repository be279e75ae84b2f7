"""Remote tracking: `adaptflow run`, the registry gate, `models` and `predict` against an mlflow
server on PostgreSQL with served artifacts (adaptflow.tracking.server), on free loopback ports."""

from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import psutil
import psycopg2
import pytest
import torch
from mlflow.tracking import MlflowClient

from adaptflow.config import load_params
from adaptflow.data import prepare_all
from adaptflow.tracking import server
from adaptflow.tracking.server import ServerError

EXPERIMENT = "adaptflow-smoke"
MODEL = "adaptflow-smoke-ae"
TINY = [  # the smoke ae stage, cut to one seed of pca + ae (as tests/stages/test_ae_stage.py)
    "ae.methods=[pca, ae]",
    "ae.archs=[mlp]",
    "ae.hidden=[32]",
    "ae.seeds=[0]",
    "ae.epochs=1",
    "ae.max_train=200",
    "ae.max_test=100",
    "ae.anomaly_digit=null",
    "ae.sparse_baseline=false",
    "ae.tsne_points=0",
    "ae.classifier_epochs=1",
    "ae.gen_samples=64",
    "ae.interp_pairs=5",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_of(status: server.Status) -> list[psutil.Process]:
    """The mlflow server, PostgreSQL and every process either started."""
    procs = []
    for pid in (status.pid, status.pg_pid):
        if pid is not None:
            p = psutil.Process(pid)
            procs += [p, *p.children(recursive=True)]
    return procs


@pytest.fixture(scope="module")
def tracking():
    try:
        server.find_pg_bin()
    except ServerError as e:
        pytest.skip(str(e))
    # not pytest's tmp_path: its base folder is 0700 (the postgres user could not reach the
    # cluster when we are root), and its long path would overflow the Unix socket path limit
    state = Path(tempfile.mkdtemp(prefix="af-track-"))
    state.chmod(0o755)
    try:
        uri = server.start(state, port=free_port(), pg_port=free_port())
        procs = processes_of(server.status(state))
        yield SimpleNamespace(uri=uri, state=state)
        server.stop(state)
        gone, alive = psutil.wait_procs(procs, timeout=10)
        assert alive == [], f"left running after stop(): {alive}"
        assert server.status(state) == server.Status(None, None, False, None, None, None)
    finally:
        server.stop(state)  # a no-op after a clean stop; else ends what a failure left behind
        shutil.rmtree(state, ignore_errors=True)


def cli(*args: str, uri: str, cwd: Path, prefect_home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PREFECT_HOME": str(prefect_home)}
    proc = subprocess.run(
        [sys.executable, "-m", "adaptflow.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"adaptflow {args[0]} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_pipeline_registry_and_predict_through_the_server(tracking, project, tmp_path_factory):
    prepare_all(load_params("params.yaml"), ["mnist"], log=lambda m: None)
    prefect_home = tmp_path_factory.mktemp("prefect")  # its prefect.db: not in the project
    sets = [a for s in ["profile=smoke", *TINY] for a in ("--set", s)]
    run = ("run", *sets, "--stage", "ae", "--no-progress")
    cli(*run, uri=tracking.uri, cwd=project, prefect_home=prefect_home)

    client = MlflowClient(tracking_uri=tracking.uri, registry_uri=tracking.uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert exp.artifact_location == f"mlflow-artifacts:/{exp.experiment_id}"  # the server's
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("adaptflow.kind") == "pipeline"]
    (stage,) = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert stage.data.tags["adaptflow.stage"] == "ae"
    methods = {
        r.data.tags["adaptflow.method"]
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == stage.info.run_id
    }
    assert methods == {"pca", "ae"}
    assert all(r.info.status == "FINISHED" for r in runs)

    # artifacts went through the server into its artifacts folder, byte for byte
    served = tracking.state / "artifacts" / exp.experiment_id
    for run in (parent, stage):
        run_id = run.info.run_id
        assert run.info.artifact_uri == f"mlflow-artifacts:/{exp.experiment_id}/{run_id}/artifacts"
        listed = [a.path for a in client.list_artifacts(run_id, "ae") if not a.is_dir]
        assert listed
        for path in listed:
            on_disk = served / run_id / "artifacts" / path
            assert (
                on_disk.read_bytes() == Path(client.download_artifacts(run_id, path)).read_bytes()
            )
    assert "| pca" in (served / parent.info.run_id / "artifacts/ae/comparison.md").read_text()

    # the gate made v1 the champion, with its decision, reason and the metric it compared
    version = client.get_model_version_by_alias(MODEL, "champion")
    tags = version.tags
    assert str(version.version) == "1"
    assert tags["gate.decision"] == "champion"
    assert tags["gate.reason"].startswith("no champion")
    assert tags["gate.metric"] == "ae/gate_val_mse"
    assert float(tags["gate.value"]) == stage.data.metrics["ae/gate_val_mse"]
    model_id = version.source.removeprefix("models:/")  # the logged model (version.model_id
    assert model_id.startswith("m-")  # stays None in mlflow 3.17, sqlite store or server)
    model_dir = served / "models" / model_id / "artifacts"
    assert client.get_logged_model(model_id).artifact_location == (
        f"mlflow-artifacts:/{exp.experiment_id}/models/{model_id}/artifacts"
    )
    assert (model_dir / "MLmodel").is_file()

    # PostgreSQL holds the rows the server answered with
    with psycopg2.connect(server.pg_dsn(tracking.state)) as con, con.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs WHERE experiment_id = %s", (exp.experiment_id,))
        assert cur.fetchone()[0] == len(runs)
        cur.execute(
            "SELECT a.version, t.value FROM registered_model_aliases a JOIN model_version_tags t"
            " ON t.name = a.name AND t.version = a.version"
            " WHERE a.name = %s AND a.alias = 'champion' AND t.key = 'gate.decision'",
            (MODEL,),
        )
        assert cur.fetchall() == [(1, "champion")]
    con.close()

    # read back from another folder: nothing of the local store is needed (or made)
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    x = np.load(project / "data/prepared/mnist.npz")["x_test"][:8]  # (8, 1, 28, 28)
    np.savez(elsewhere / "x.npz", x=x)
    listing = cli("models", uri=tracking.uri, cwd=elsewhere, prefect_home=prefect_home).stdout
    (row,) = [line for line in listing.splitlines() if MODEL in line]
    assert "champion" in row and version.run_id[:12] in row
    cli(
        "predict", "--model", f"{MODEL}@champion", "--input", "x.npz", "--out", "preds.csv",
        uri=tracking.uri, cwd=elsewhere, prefect_home=prefect_home,
    )  # fmt: skip
    with open(elsewhere / "preds.csv") as f:
        rows = list(csv.DictReader(f))
    net = mlflow.pytorch.load_model(str(model_dir), map_location="cpu").eval()
    with torch.no_grad():
        expected = ((net(torch.from_numpy(x)).numpy() - x) ** 2).reshape(len(x), -1).mean(1)
    assert [r["input"] for r in rows] == [str(i) for i in range(8)]
    assert [float(r["reconstruction_mse"]) for r in rows] == pytest.approx(expected, rel=1e-4)

    for folder in (project, elsewhere):  # no local store, and no mlflow default ./mlartifacts
        assert not [p.name for p in folder.rglob("*") if p.name in ("mlruns", "mlartifacts")]
        assert not list(folder.rglob("*.db"))


def test_start_refuses_a_port_in_use(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ServerError, match=f"port {port} on 127.0.0.1 is in use"):
            server.start(tmp_path / "state", port=port, pg_port=free_port())
    assert not (tmp_path / "state" / "pg").exists()  # refused before initdb


def test_a_stale_pid_file_is_reported_and_cleared(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    layout = server.Layout.at(tmp_path)
    layout.pid_file.write_text(f"{gone.pid}\n")
    status = server.status(tmp_path)
    assert (status.uri, status.pid, status.stale_pid) == (None, None, gone.pid)
    server.stop(tmp_path)
    assert not layout.pid_file.exists()


def test_missing_postgres_binaries_name_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PG_BIN", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(server, "DEBIAN_PG_BIN", str(tmp_path / "postgresql/*/bin"))
    with pytest.raises(ServerError, match="install Debian's `postgresql` package"):
        server.find_pg_bin()
