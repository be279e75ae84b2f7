"""Security: checkpoints are loaded with `weights_only=True`, so a pickle that would run code is
refused (tested with one that does); every server adaptflow starts listens on the loopback
interface only: `make ui` (the MLflow UI), `make prefect-server`, and the local Dask cluster's
scheduler, workers and dashboard — read from the sockets the processes really bound (psutil),
not from their command lines."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch
from torch import nn

from adaptflow.config import RunnerConfig
from adaptflow.models.backbones import CheckpointFileError, load_weights
from adaptflow.training.checkpoint import CheckpointError, load_checkpoint

from .conftest import REPO

LOOPBACK = {"127.0.0.1", "::1"}


class _Payload:
    """Unpickling this creates `marker`: code run by merely loading the file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    model = nn.Linear(2, 2)
    torch.save({"model": model.state_dict(), "epoch": _Payload(marker)}, evil)
    torch.load(evil, weights_only=False)  # the file is what it claims: a full unpickle runs it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        load_checkpoint(evil, model)
    with pytest.raises(CheckpointFileError, match="not a readable torch checkpoint"):
        load_weights(model, evil)
    assert not marker.exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(root: psutil.Process) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket the process tree of `root` listens on."""
    pids = {root.pid, *(p.pid for p in root.children(recursive=True))}
    return sorted(
        (c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections(kind="tcp")
        if c.pid in pids and c.status == psutil.CONN_LISTEN
    )


def _served(args: list[str], port: int, env: dict[str, str], timeout: float = 120.0):
    """Start a make target, wait until something listens on `port`, return every listening
    socket of its process tree; the whole tree is stopped afterwards."""
    proc = subprocess.Popen(
        ["make", "--no-print-directory", *args],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"{args} exited {proc.returncode}: {proc.stdout.read().decode()}")
            bound = _listening(psutil.Process(proc.pid))
            if any(p == port for _, p in bound):
                return bound
            time.sleep(0.5)
        pytest.fail(f"{args}: nothing listened on port {port} within {timeout:.0f} s")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_make_ui_listens_on_loopback_only(tmp_path):
    port = _free_port()
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    bound = _served(["ui", f"PORT={port}"], port, env)
    assert bound and {ip for ip, _ in bound} <= LOOPBACK, bound


def test_make_prefect_server_listens_on_loopback_only(tmp_path):
    port = _free_port()
    home = tmp_path / "prefect"
    bound = _served(["prefect-server", f"PREFECT_PORT={port}", f"PREFECT_HOME={home}"], port, {})
    assert bound and {ip for ip, _ in bound} <= LOOPBACK, bound
    assert Path(home).is_dir()  # its state went where it was told, not into the checkout


def test_the_local_dask_cluster_and_its_dashboard_listen_on_loopback_only(monkeypatch):
    from adaptflow.sweep import task_runners

    # no Prefect API is needed to start the cluster: only units would talk to it
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    me = psutil.Process()
    before = set(_listening(me))
    dashboard = _free_port()
    with task_runners(RunnerConfig(kind="dask", workers=1, dashboard=f"127.0.0.1:{dashboard}")):
        bound = [s for s in _listening(me) if s not in before]
    # the scheduler and the dashboard (this process) and the worker and its nanny (children)
    assert len(bound) >= 3, bound
    assert dashboard in {port for _, port in bound}, f"the dashboard is not up: {bound}"
    assert {ip for ip, _ in bound} <= LOOPBACK, bound
