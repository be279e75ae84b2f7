"""A stage's sweep (method x seed x pair, fraction x seed ...) as Prefect tasks on a task runner.

A stage hands `sweep()` a function of one unit and the units; each unit is a Prefect task
`sweep-unit` that logs its own nested MLflow run under the stage's run. Where units run is the
flow's task runner, chosen by `params.runner` (`task_runners`):

- `local` (default): one after another in the pipeline's process, in the stage's thread, so a
  unit sees the stage's active MLflow run and the pipeline's torch threads;
- `dask`: `prefect_dask.DaskTaskRunner` on a local cluster (`runner.workers` processes, one
  thread each, dashboard on 127.0.0.1) or on an existing cluster (`runner.address`). Units run
  concurrently in worker processes; each sets its tracking URI and nests its run under the
  stage run by id (`runs.parent_scope`), since the active run does not cross processes.

Every unit seeds everything it uses (the stage's function does), so a unit's result does not
depend on where or in which order it runs; the test suite checks a Dask sweep against the
in-process one. The functions and items must pickle (module-level functions, arrays, configs).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE

from adaptflow.config import ParamsError, RunnerConfig

R = TypeVar("R")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """Where a unit in another process logs: the store, the experiment and the stage's run."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    root: str  # the project root: the local store's artifact links are relative to it

    @classmethod
    def here(cls) -> Target:
        import mlflow

        active = mlflow.active_run()
        if active is None:
            raise RuntimeError("sweep() runs inside a stage's MLflow run")
        return cls(
            mlflow.get_tracking_uri(),
            active.info.experiment_id,
            active.info.run_id,
            str(Path.cwd().resolve()),
        )

    @contextmanager
    def entered(self) -> Iterator[None]:
        """In a worker: the same store, and new runs nested under the stage's run."""
        import mlflow

        from adaptflow.env import configure_env
        from adaptflow.tracking import runs

        local = self.tracking_uri.startswith("sqlite:")
        if local and Path.cwd().resolve() != Path(self.root):
            # a worker elsewhere would write artifacts under its own cwd: never half a run
            raise ParamsError(
                f"runner: a Dask worker runs in {Path.cwd()}, not in the project root "
                f"{self.root}, and the MLflow store is the local sqlite one; with an existing "
                "cluster (runner.address) use a tracking server (MLFLOW_TRACKING_URI)"
            )
        configure_env(self.root)  # a remote worker: offline, quiet, caches inside the project
        mlflow.set_tracking_uri(self.tracking_uri)
        tags = {"adaptflow.worker": _worker_address()}  # which Dask worker ran the unit
        with runs.parent_scope(self.parent_run_id, self.experiment_id, tags):
            yield


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):  # not inside a Dask worker
        return "none"


@task(name="sweep-unit", cache_policy=NO_CACHE)
def sweep_unit(unit: Callable[[Any], R], target: Target | None, ctx: Any) -> R:
    """One unit of a sweep (its own nested MLflow run, logged by the unit)."""
    if target is None:  # in the stage's own thread: the stage run is the active run
        return unit(ctx)
    with target.entered():
        return unit(ctx)


def _distributed() -> bool:
    from prefect.context import FlowRunContext

    flow_run = FlowRunContext.get()
    runner = getattr(flow_run, "task_runner", None)
    return runner is not None and type(runner).__name__ == "DaskTaskRunner"


def sweep(units: Sequence[Callable[[Any], R]], ctx: Any, names: Sequence[str]) -> list[R]:
    """[unit(ctx) for unit in units], each a `sweep-unit` task (named by `names`) on the flow's
    task runner, results in the order of `units`. A unit is a picklable callable of the stage
    context, e.g. functools.partial(one_run, pair_data, method, seed). Outside a Prefect flow
    (a stage run by a unit test) the units simply run in turn. On a distributed runner every
    unit runs to its end before the first error is raised (no run keeps writing behind a failed
    stage), and `ctx.progress` is off (workers' progress bars would interleave)."""
    from prefect.context import FlowRunContext

    if len(units) != len(names):
        raise ValueError(f"sweep: {len(units)} units but {len(names)} names")
    if FlowRunContext.get() is None:
        return [unit(ctx) for unit in units]
    if not _distributed():
        return [
            sweep_unit.with_options(task_run_name=name)(unit, None, ctx)
            for name, unit in zip(names, units, strict=True)
        ]
    target = Target.here()
    unit_ctx = replace(ctx, progress=False)
    futures = [
        sweep_unit.with_options(task_run_name=name).submit(unit, target, unit_ctx)
        for name, unit in zip(names, units, strict=True)
    ]
    for f in futures:
        f.wait()
    if any(f.state.is_failed() or f.state.is_crashed() for f in futures):
        _fail_orphans(target.parent_run_id)
    return [f.result() for f in futures]


def _fail_orphans(stage_run_id: str) -> None:
    """A unit whose worker died leaves its MLflow run RUNNING: mark it FAILED with the stage."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    exp = client.get_run(stage_run_id).info.experiment_id
    for r in client.search_runs(
        [exp], f"tags.mlflow.parentRunId = '{stage_run_id}' and attributes.status = 'RUNNING'"
    ):
        client.set_tag(r.info.run_id, "adaptflow.error", "its Dask worker died or was stopped")
        client.set_terminated(r.info.run_id, "FAILED")


# ---------------------------------------------------------------- task runners
@contextmanager
def task_runners(cfg: RunnerConfig) -> Iterator[Callable[[], Any]]:
    """A factory of the task runner each stage flow gets, for the pipeline's duration. A local
    Dask cluster is started here (and stopped after the last stage) so stages share it; its
    workers reach this process's Prefect API through PREFECT_API_URL (else each worker would
    start a Prefect server of its own)."""
    if cfg.kind == "local":
        from prefect.task_runners import ThreadPoolTaskRunner

        yield lambda: ThreadPoolTaskRunner(max_workers=1)
        return
    from prefect_dask import DaskTaskRunner

    if cfg.address is not None:
        log.info("sweep units run on the Dask cluster at %s", cfg.address)
        yield lambda: DaskTaskRunner(address=cfg.address)
        return
    import dask
    from distributed import LocalCluster

    with (
        _prefect_api_for_workers(),
        # a unit whose worker died is not run again: its first attempt's MLflow run exists
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        LocalCluster(
            n_workers=cfg.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=cfg.dashboard,
        ) as cluster,
    ):
        log.info(
            "sweep units run on a local Dask cluster: %d workers, dashboard %s",
            cfg.workers,
            cluster.dashboard_link,
        )
        yield lambda: DaskTaskRunner(address=cluster.scheduler_address)


def check_cluster(address: str, timeout: float = 10.0) -> None:
    """An existing cluster must answer, and run one thread per worker process: units seed the
    process-wide RNGs (torch, numpy), so two units side by side in one process would draw from
    each other's streams and results would depend on scheduling."""
    from distributed import Client

    try:
        with Client(address, timeout=timeout) as client:
            workers = client.scheduler_info()["workers"]
    except OSError as e:
        raise ParamsError(
            f"runner.address = {address!r}: no Dask scheduler answers there ({e}); start one "
            "(`dask scheduler`) or drop runner.address for a local cluster"
        ) from None
    if not workers:
        raise ParamsError(f"runner.address = {address!r}: the cluster has no workers")
    threaded = sorted(w for w, info in workers.items() if info.get("nthreads", 1) != 1)
    if threaded:
        raise ParamsError(
            f"runner.address = {address!r}: workers {threaded} run several threads; start "
            "them with `dask worker --nthreads 1 --nworkers N` (units seed process-wide RNGs)"
        )


@contextmanager
def _prefect_api_for_workers() -> Iterator[None]:
    from prefect.client.orchestration import get_client

    before = os.environ.get("PREFECT_API_URL")
    if before is None:  # the ephemeral server this process started (or a configured one)
        os.environ["PREFECT_API_URL"] = str(get_client(sync_client=True).api_url)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PREFECT_API_URL", None)
