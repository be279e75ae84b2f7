"""`runner: dask`: a stage's sweep units as Prefect tasks on a local 2-worker Dask cluster.

The same tiny da sweep (one pair x two methods x two seeds) runs in process and on Dask; every
unit must land in MLflow exactly once, nested under its stage run, run by a Dask worker, with
the same results as in process. Torch runs one thread in both (a Dask worker has one): float
reductions on a different thread count round differently, which is not what is tested here.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from adaptflow.config import ParamsError, load_params
from adaptflow.data import prepare_all
from adaptflow.stages.validate import check_against_data

from .conftest import TINY_DA

TINY = [*TINY_DA, "da.methods=[source_only, mcc]", "da.seeds=[0, 1]", "da.grid={}"]
COMPARED = ("da/target_acc", "da/source_test_acc", "da/oracle_selected_acc", "da/mmd")


def run_da(overrides: list[str]) -> dict:
    from flows.pipeline import pipeline_flow

    return pipeline_flow("params.yaml", overrides, ".", True, False, ["da"])["da"]


def units(client: MlflowClient, stage_run_id: str) -> dict[str, object]:
    exp = client.get_run(stage_run_id).info.experiment_id
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{stage_run_id}'")
    return [r for r in children if r.data.tags.get("adaptflow.kind") == "method"]


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_dask_sweep_lands_once_and_equals_in_process(project, harness, one_thread):
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["data"]["sources"]["syndigits"].update(n_train=600, n_test=100)
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    prepare_all(load_params("params.yaml"), ["syndigits", "mnist"], log=lambda m: None)
    before = {p.pid for p in psutil.Process().children(recursive=True)}

    local = run_da(TINY)
    dask = run_da([*TINY, "runner.kind=dask", "runner.workers=2"])

    client = MlflowClient()
    expected = {f"da/syn2mnist/{m}-s{s}" for m in ("source_only", "mcc") for s in (0, 1)}
    by_runner = {}
    for label, out in (("local", local), ("dask", dask)):
        runs = units(client, out["run_id"])
        names = [r.info.run_name for r in runs]
        assert sorted(names) == sorted(expected), f"{label}: {names}"  # each unit exactly once
        assert all(r.info.status == "FINISHED" for r in runs)
        by_runner[label] = {r.info.run_name: r for r in runs}
    # in the whole experiment: two of each unit (one per stage run), nothing parentless
    exp = client.get_run(dask["run_id"]).info.experiment_id
    for name in expected:
        found = client.search_runs([exp], f"attributes.run_name = '{name}'")
        assert len(found) == 2, (name, [r.data.tags.get("mlflow.parentRunId") for r in found])
    workers = {r.data.tags.get("adaptflow.worker") for r in by_runner["dask"].values()}
    assert all(w.startswith("tcp://127.0.0.1:") for w in workers), workers
    assert all("adaptflow.worker" not in r.data.tags for r in by_runner["local"].values())
    for name in expected:
        a, b = by_runner["local"][name].data, by_runner["dask"][name].data
        for key in COMPARED:
            assert a.metrics[key] == b.metrics[key], (name, key, a.metrics[key], b.metrics[key])
        assert a.params["chosen_step"] == b.params["chosen_step"], name
    timeless = lambda m: {k: v for k, v in m.items() if "seconds" not in k}  # noqa: E731
    assert timeless(dask["metrics"]) == pytest.approx(timeless(local["metrics"]), nan_ok=True)
    left = {p.pid for p in psutil.Process().children(recursive=True)} - before
    alive = [  # multiprocessing's resource tracker lives as long as this process, by design
        p
        for p in map(psutil.Process, left)
        if p.is_running()
        and p.status() != "zombie"
        and "multiprocessing.resource_tracker" not in " ".join(p.cmdline())
    ]
    assert not alive, [p.cmdline() for p in alive]


def test_runner_params_are_checked(monkeypatch):
    with pytest.raises(ParamsError, match="runner.dashboard"):
        load_params("params.yaml", ["runner=dask", "runner.dashboard=0.0.0.0:8787"])
    with pytest.raises(ParamsError, match="runner.address is set"):
        load_params("params.yaml", ["runner.address=tcp://10.0.0.1:8786"])
    assert load_params("params.yaml", ["runner=dask"]).runner.kind == "dask"
    # an existing cluster's workers cannot write this checkout's sqlite store: refused up front
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with socket.socket() as closed:  # bound, never listening: no scheduler there
        closed.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{closed.getsockname()[1]}"
        remote = load_params("params.yaml", ["runner.kind=dask", f"runner.address={address}"])
        with pytest.raises(ParamsError, match="MLFLOW_TRACKING_URI"):
            check_against_data(remote, [])
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5001")
        with pytest.raises(ParamsError, match="no Dask scheduler answers"):
            check_against_data(remote, [])


def toy_unit(value: int, ctx) -> int:
    from adaptflow.tracking import runs

    with runs.run(f"toy/unit-{value}"):
        if value == 2:
            raise ParamsError("unit 2 has bad params")
        runs.log_metrics({"value": value})
    return value * 10


def test_a_failing_unit_lets_the_others_finish_and_raises_its_own_error(project, harness):
    """On Dask every unit runs to its end; the stage then fails with the unit's own error (a
    ParamsError stays one: no retry), its run FAILED, the others FINISHED; the env is restored."""
    from prefect import flow

    from adaptflow.config import RunnerConfig
    from adaptflow.stages.base import StageContext
    from adaptflow.sweep import sweep, task_runners
    from adaptflow.tracking import runs
    from adaptflow.tracking.store import configure

    exp = configure(".", "toy")
    ctx = StageContext(root=Path("."), experiment_id=exp, device=torch.device("cpu"))
    api_before = os.environ.get("PREFECT_API_URL")
    stage_id = {}

    @flow
    def toy_stage():
        with runs.run("toy-stage") as stage:
            stage_id["id"] = stage.info.run_id
            units = [functools.partial(toy_unit, v) for v in range(4)]
            return sweep(units, ctx, [f"toy/unit-{v}" for v in range(4)])

    with task_runners(RunnerConfig(kind="dask", workers=2)) as task_runner:
        assert os.environ["PREFECT_API_URL"].startswith("http://127.0.0.1:")  # for the workers
        with pytest.raises(ParamsError, match="unit 2 has bad params"):
            toy_stage.with_options(task_runner=task_runner())()
    assert os.environ.get("PREFECT_API_URL") == api_before
    children = MlflowClient().search_runs([exp], f"tags.mlflow.parentRunId = '{stage_id['id']}'")
    status = {r.info.run_name: r.info.status for r in children}
    assert status == {
        "toy/unit-0": "FINISHED",
        "toy/unit-1": "FINISHED",
        "toy/unit-2": "FAILED",
        "toy/unit-3": "FINISHED",
    }
    assert {r.data.tags["adaptflow.worker"][:16] for r in children} == {"tcp://127.0.0.1:"}


def test_an_existing_cluster_with_threaded_workers_is_refused():
    from distributed import LocalCluster

    from adaptflow.sweep import check_cluster

    with LocalCluster(
        n_workers=1,
        threads_per_worker=2,
        processes=False,  # in this process (inproc://): nothing listens on a port
        dashboard_address=None,
    ) as cluster:
        with pytest.raises(ParamsError, match="dask worker --nthreads 1"):
            check_cluster(cluster.scheduler_address)
