"""The parent flow: one MLflow parent run, each stage flow as a subflow with a nested run.

`python -m flows.pipeline [--set k=v ...]` or `adaptflow run`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

from prefect import flow

from adaptflow import dvc_plots
from adaptflow.config import load_params, parse_overrides
from adaptflow.files import atomic_write_text
from adaptflow.sweep import task_runners
from flows.ae import ae_flow
from flows.da import da_flow
from flows.features import features_flow
from flows.finetune import finetune_flow
from flows.gan import gan_flow
from flows.pretrain import pretrain_flow
from flows.seq import seq_flow
from flows.source import source_flow

STAGE_FLOWS = {  # pipeline order
    "ae": ae_flow,
    "pretrain": pretrain_flow,
    "source": source_flow,
    "features": features_flow,
    "finetune": finetune_flow,
    "da": da_flow,
    "gan": gan_flow,
    "seq": seq_flow,
}
log = logging.getLogger(__name__)


_starting = None  # the FileLock held from before the flow call until its body runs
# niceness of the temporary Prefect server: its work (recording task runs from events, writing
# logs to its database) is deferrable, and at the same priority it takes CPU from the training
# threads (on 2 cores, 100 task runs slowed the next 1.3 s of training to ~3 s; niced: ~1.5 s).
# It answers at once when the pipeline waits on it and the cores are then free; when other
# processes keep both cores busy (a second pipeline, Dask workers) its answers take longer.
SERVER_NICE = 10


@contextlib.contextmanager
def ephemeral_prefect(timeout: float = 300.0) -> Iterator[None]:
    """Around a process's flow call when there is no Prefect server (PREFECT_API_URL unset):
    Prefect then starts a temporary one on PREFECT_HOME's database for this process.

    - Its start is serialised across processes: two starting at once both migrate the database
      and one fails ("Online migration expected to match one row"). The lock is held until the
      flow's body runs (`_started`), i.e. while the server starts.
    - No flow-run heartbeats: they let a long-lived server mark crashed runs, but this server
      ends with the process, and each flow's heartbeat thread costs up to 1 s at its end (it
      sleeps in 1 s steps; 9 flows: ~4 s of a cached re-run's ~25 s).
    - The server runs at a lower CPU priority (SERVER_NICE), set once it is up (`_started`).
    - Temporary servers a killed run (SIGKILL, OOM) left running on this PREFECT_HOME are ended
      first: each run records its server once it is up (`adaptflow.prefect_server`).
    With a server (an API URL in Prefect's settings: PREFECT_API_URL, a profile; e.g. `make
    prefect-server` or a deployment) nothing changes."""
    global _starting
    from prefect.settings import get_current_settings

    if get_current_settings().api.url:  # env, a Prefect profile or prefect.toml
        yield
        return
    from prefect.context import SettingsContext

    from adaptflow.prefect_server import reap_orphan_servers
    from adaptflow.tracking.store import acquire

    home = Path(get_current_settings().home)
    home.mkdir(parents=True, exist_ok=True)
    path = home / "adaptflow-start.lock"
    # released in the flow's body; StoreError (exit 1, named file) after `timeout`
    _starting = acquire(path, timeout, "another adaptflow process is starting Prefect")
    try:
        # what a killed run left on this database; under the lock: no run is starting one now
        reap_orphan_servers(home)
        current = get_current_settings()
        quiet = current.model_copy(
            update={"flows": current.flows.model_copy(update={"heartbeat_frequency": None})}
        )
        with SettingsContext(profile=SettingsContext.get().profile, settings=quiet):
            yield
    finally:
        _started()


def _started() -> None:
    global _starting
    if _starting is not None:
        _starting.release()
        _starting = None
        _nice_temporary_server()


def _nice_temporary_server() -> None:
    """Record the temporary Prefect server this process started (if any), for the run after a
    kill to end it (`adaptflow.prefect_server`), and lower its CPU priority: every thread of it
    (on Linux a thread's nice is its own; the server's database threads exist before this
    runs), else the process (elsewhere)."""
    import os

    from prefect.settings import get_current_settings

    from adaptflow.prefect_server import record_server

    try:
        from prefect.server.api.server import SubprocessASGIServer  # not public API: best effort

        servers = list(SubprocessASGIServer._instances.values())
    except Exception as e:
        log.debug("could not find Prefect's temporary server: %s", e)
        return
    for server in servers:
        proc = getattr(server, "server_process", None)
        if proc is None or proc.poll() is not None:
            continue
        record_server(get_current_settings().home, proc.pid)
        try:
            ids = [int(t) for t in os.listdir(f"/proc/{proc.pid}/task")]
        except OSError:  # not Linux, or the server ended meanwhile
            ids = [proc.pid]
        for tid in ids:
            try:
                now = os.getpriority(os.PRIO_PROCESS, tid)
                os.setpriority(os.PRIO_PROCESS, tid, max(now, SERVER_NICE))
            except Exception as e:  # a thread that ended meanwhile; never a reason to fail a run
                log.debug(
                    "could not renice Prefect's server (pid %d, thread %d): %s", proc.pid, tid, e
                )


def metrics_path(root: str | Path, profile: str) -> Path:
    """reports/metrics-<profile>.json: one file per profile, so a smoke run never overwrites the
    default profile's numbers (DVC tracks `reports/metrics-${profile}.json`)."""
    return Path(root) / "reports" / f"metrics-{profile}.json"


def plots_dir(root: str | Path, profile: str) -> Path:
    """reports/plots-<profile>/: the CSVs of `dvc plots show` (see adaptflow.dvc_plots)."""
    return Path(root) / "reports" / f"plots-{profile}"


def _metrics(outcomes: dict[str, dict]) -> dict[str, float]:
    return {k: v for o in outcomes.values() for k, v in o["metrics"].items()}


def _write_metrics(path: Path, outcomes: dict[str, dict]) -> None:
    """The metrics of every stage for `dvc metrics show`, written atomically."""
    atomic_write_text(path, json.dumps(_metrics(outcomes), indent=2, sort_keys=True))


@flow(name="adaptflow-pipeline")
def pipeline_flow(
    params_path: str = "params.yaml",
    overrides: list[str] | None = None,
    root: str = ".",
    force: bool = False,
    progress: bool = True,
    stages: list[str] | None = None,
) -> dict[str, dict]:
    from adaptflow.stages import STAGES
    from adaptflow.tracking import runs
    from adaptflow.tracking.store import configure

    _started()  # the Prefect server is up: another process may start its own (ephemeral_prefect)
    overrides = list(overrides or [])
    params = load_params(params_path, overrides)
    chosen = stages or list(STAGE_FLOWS)
    _check_against_data(params, chosen)  # before any MLflow run exists: a bad param exits clean
    experiment_id = configure(root, params.experiment)
    reaped = runs.reap_stale_runs([experiment_id])
    if reaped:
        log.warning(
            "%d run(s) left RUNNING by a killed process were marked KILLED: %s",
            len(reaped),
            ", ".join(r[:12] for r in reaped),
        )
    outcomes: dict[str, dict] = {}
    tags = {
        "adaptflow.kind": "pipeline",
        "adaptflow.profile": params.profile,
        "adaptflow.seed": str(params.seed),
        "adaptflow.git_commit": runs.git_commit(root),
        **prefect_tags(),
        runs.NOTE: f"adaptflow pipeline, profile {params.profile}, stages {', '.join(chosen)}"
        + (f", overrides {' '.join(overrides)}" if overrides else ""),
    }
    with runs.run(f"pipeline-{params.profile}", tags=tags, experiment_id=experiment_id) as parent:
        runs.log_params(
            {
                "seed": params.seed,
                "device": params.device,
                "profile": params.profile,
                "stages": chosen,
                "overrides": overrides,
            }
        )
        failed: dict[str, str] = {}
        first_error: Exception | None = None
        with task_runners(params.runner) as task_runner:  # a local Dask cluster lives here
            for name in chosen:
                spec = STAGES.get(name)
                blocked = [d for d in spec.depends_on if d in failed]
                if first_error is not None and params.on_stage_failure == "stop":
                    failed[name] = "not run (on_stage_failure: stop)"
                    continue
                if blocked:
                    failed[name] = f"not run: it needs {', '.join(blocked)}, which failed"
                    continue
                done = [d for d in spec.depends_on if d in outcomes]  # else: from the registry
                try:
                    out = STAGE_FLOWS[name].with_options(task_runner=task_runner())(
                        params_path,
                        overrides,
                        root,
                        parent.info.run_id,
                        force,
                        progress,
                        {d: outcomes[d]["cache_key"] for d in done},
                        {d: upstream_ref(outcomes[d]) for d in done},
                    )
                except Exception as e:  # the stage's run is FAILED with the reason already
                    failed[name] = f"{type(e).__name__}: {e}"
                    first_error = first_error or e
                    log.error("stage %s failed: %s", name, failed[name])
                    continue
                outcomes[name] = out  # the registry gate ran inside the stage (base.execute)
        runs.log_metrics({k: v for o in outcomes.values() for k, v in o["metrics"].items()})
        runs.log_metrics({"pipeline/stages_cached": sum(o["cache_hit"] for o in outcomes.values())})
        if first_error is not None:
            runs.log_metrics(
                {
                    "pipeline/stages_failed": sum(
                        not v.startswith("not run") for v in failed.values()
                    )
                }
            )
            raise StagesFailed(outcomes, failed) from first_error
    skip = report_skip_reason(list(outcomes), overrides, params_path, tags)
    if skip is None:
        _write_metrics(metrics_path(root, params.profile), outcomes)
        dvc_plots.write(plots_dir(root, params.profile), _metrics(outcomes))
    else:
        log.info("%s not written: %s", metrics_path(root, params.profile), skip)
    return outcomes


class StagesFailed(RuntimeError):
    """Stages failed (their runs FAILED with the reason): what finished (`outcomes`) and what
    did not (`failed`: stage -> reason, or why it was not run), for the summary."""

    def __init__(self, outcomes: dict[str, dict], failed: dict[str, str]):
        self.outcomes, self.failed = outcomes, failed
        ran = {k: v for k, v in failed.items() if not v.startswith("not run")}
        super().__init__(
            "; ".join(f"stage {k} failed: {v}" for k, v in ran.items())
            + (f" ({len(failed) - len(ran)} stage(s) not run)" if len(failed) > len(ran) else "")
        )


def prefect_tags() -> dict[str, str]:
    """The Prefect flow run behind this pipeline run (and its deployment when scheduled or
    triggered through one): the link between the Prefect UI and the MLflow UI."""
    from prefect.runtime import deployment, flow_run

    tags = {"adaptflow.prefect_flow_run": str(flow_run.id or "")}
    if deployment.name:
        tags["adaptflow.prefect_deployment"] = f"{flow_run.flow_name}/{deployment.name}"
    return tags


def upstream_ref(outcome: dict) -> dict:
    """What a downstream stage gets of a finished one: the run holding its artifacts and its
    logged models' URIs by label ("" = its single model): models pass through MLflow. A model
    the gate refused to register (non-finite metrics: a diverged run) is not passed on."""
    models = {
        label: m["uri"]
        for label, m in outcome["models"].items()
        if m.get("decision") != "not registered"
    }
    if outcome.get("model_uri") and outcome.get("model_decision") != "not registered":
        models[""] = outcome["model_uri"]
    return {"run_id": outcome["artifact_run_id"], "models": models}


def report_skip_reason(
    ran: list[str],
    overrides: list[str],
    params_path: str = "params.yaml",
    tags: dict[str, str] | None = None,
) -> str | None:
    """Why this run must not write the profile's versioned report, or None when it may: only a
    full pipeline run of the profile as configured in params.yaml (no `--set` other than
    `profile=`, no other params file) does; an `ae.epochs=1`, `--params other.yaml` or
    `--stage ae` run would overwrite the numbers DVC versions, and so would every scheduled
    run (a deployment's runs leave the checkout's versioned files alone)."""
    deployment = (tags or {}).get("adaptflow.prefect_deployment")
    if deployment:  # unattended: it must not leave the checkout's versioned files changed
        return (
            f"a scheduled run (deployment {deployment}); `make repro` or a manual full run "
            "writes the versioned report"
        )
    if Path(params_path).name != "params.yaml":
        return f"params come from {params_path}, not the project's params.yaml"
    if ran != list(STAGE_FLOWS):
        return f"only stages {ran} ran (the report needs the full pipeline {list(STAGE_FLOWS)})"
    changed = sorted(k for k in parse_overrides(overrides) if k != "profile")
    if changed:
        return f"--set overrides {changed} change the profile's params"
    return None


def _check_against_data(params, chosen: list[str]) -> None:
    """Params that contradict the prepared data (raises adaptflow.config.ParamsError)."""
    from adaptflow.stages.validate import check_against_data

    check_against_data(params, chosen)


if __name__ == "__main__":
    import sys

    from adaptflow.cli import app

    app(["run", *sys.argv[1:]])
