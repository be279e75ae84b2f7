"""`runner: dask`: a stage's sweep units as Prefect tasks on a local 2-worker Dask cluster.

The same tiny da sweep (one pair x two methods x two seeds) runs in process and on Dask; every
unit must land in MLflow exactly once, nested under its stage run, run by a Dask worker, with
the same results as in process. Torch runs one thread in both (a Dask worker has one): float
reductions on a different thread count round differently, which is not what is tested here.
"""

from __future__ import annotations

import psutil
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from adaptflow.config import ParamsError, load_params
from adaptflow.data import prepare_all
from adaptflow.stages.validate import check_against_data

TINY = [
    "profile=smoke",
    "da.methods=[source_only, mcc]",
    "da.seeds=[0, 1]",
    "da.grid={}",
    "da.steps=20",
    "da.max_train=300",
    "da.max_target=300",
    "da.max_test=100",
    "da.select_points=100",
    "da.tsne_points=30",
]
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
    remote = load_params("params.yaml", ["runner.kind=dask", "runner.address=tcp://h:8786"])
    with pytest.raises(ParamsError, match="MLFLOW_TRACKING_URI"):
        check_against_data(remote, [])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5001")
    check_against_data(remote, [])
