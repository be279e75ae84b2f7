"""The pipeline as a Prefect deployment on the schedule of params.yaml's `schedule` section.

    make prefect-server          # shell 1: the Prefect server + UI on 127.0.0.1:4200
    make schedule                # shell 2: serve the deployment (runs start in this process)
    make schedule-once           # shell 3: a run of the deployment now
    make schedule-pool POOL=p    # or: register it on a work pool, run by `prefect worker start`

`serve` registers the deployment `adaptflow-pipeline/<schedule.name>` with the cron schedule
(`schedule.cron` in `schedule.timezone`) and the parameters of each run (`schedule.profile`,
`schedule.overrides`, `schedule.stages`), then executes its scheduled and triggered runs until
stopped (Ctrl-C pauses the schedule and exits). It needs a Prefect server: the ephemeral one
that `make pipeline` starts lives only as long as its process, and the UI and `schedule-once`
must reach the same server. `--interval SECONDS` replaces the cron (a quick check, tests).
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from typing import Annotated

import typer

from adaptflow import interrupt
from adaptflow.config import ParamsError, load_params

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n\n")[0])
FLOW_NAME = "adaptflow-pipeline"


class ScheduleError(RuntimeError):
    """The deployment cannot be served or triggered as asked (no server, bad schedule)."""


def deployment_parameters(params_path: str, params) -> dict:
    """What each run of the deployment calls `pipeline_flow` with (JSON, shown in the UI)."""
    from flows.pipeline import STAGE_FLOWS

    cfg = params.schedule
    unknown = [s for s in cfg.stages or [] if s not in STAGE_FLOWS]
    if unknown:
        raise ParamsError(
            f"invalid params:\n  schedule.stages: unknown stage(s) {unknown}; "
            f"valid: {', '.join(STAGE_FLOWS)}"
        )
    return {
        "params_path": params_path,
        "overrides": [f"profile={cfg.profile}", *cfg.overrides],
        "root": ".",
        "force": False,
        "progress": False,
        "stages": cfg.stages,
    }


def check_schedule(params, params_path: str) -> None:
    """The whole configuration of a scheduled run, validated now rather than at 2 a.m."""
    from prefect.schedules import Cron

    from adaptflow.stages.validate import check_against_data

    try:
        Cron(params.schedule.cron, timezone=params.schedule.timezone)
    except ValueError as e:
        raise ParamsError(
            f"invalid params:\n  schedule.cron = {params.schedule.cron!r}: not a cron "
            f"expression ({e}); e.g. '0 2 * * *' (02:00 daily)"
        ) from None
    run_params = load_params(params_path, deployment_parameters(params_path, params)["overrides"])
    from flows.pipeline import STAGE_FLOWS

    check_against_data(run_params, params.schedule.stages or list(STAGE_FLOWS))


def api_url() -> str:
    """The Prefect server the deployment lives on; a clear error when there is none."""
    import httpx

    url = os.environ.get("PREFECT_API_URL", "")
    if not url:
        raise ScheduleError(
            "PREFECT_API_URL is not set: a schedule needs a running Prefect server. Start one "
            "with `make prefect-server` (another shell) and export "
            "PREFECT_API_URL=http://127.0.0.1:4200/api (`make schedule` sets this default)"
        )
    try:
        ok = httpx.get(f"{url.rstrip('/')}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        ok = False
    if not ok:
        raise ScheduleError(
            f"no Prefect server answers at PREFECT_API_URL={url}: start it with "
            "`make prefect-server` (another shell), or point PREFECT_API_URL at yours"
        )
    return url


def serve(
    params_path: str = "params.yaml",
    interval: float | None = None,
    limit: int = 1,
) -> None:
    """Register the deployment and run its flow runs until interrupted (blocks)."""
    from prefect.deployments.runner import EntrypointType

    from flows.pipeline import pipeline_flow

    params, url, schedule, when = _prepared(params_path, interval)
    cfg = params.schedule
    print(f"serving {FLOW_NAME}/{cfg.name} on {url}, {when}; Ctrl-C stops", flush=True)
    # Ctrl-C (SIGINT) and a service manager's SIGTERM both stop serving the Prefect way
    # (KeyboardInterrupt: pause the schedule, stop the runs, exit), also when this process was
    # started with SIGINT ignored (a background job of a non-interactive shell inherits that),
    # and also when the signal lands in a finalizer (sent again: `interrupt.handle_signals`)
    with interrupt.handle_signals(lambda why: None, raise_as=KeyboardInterrupt):
        pipeline_flow.serve(
            name=cfg.name,
            schedules=[schedule],
            parameters=deployment_parameters(params_path, params),
            description=f"adaptflow pipeline, profile {cfg.profile}, {when}",
            tags=["adaptflow", f"profile:{cfg.profile}"],
            limit=limit,  # one pipeline at a time: runs share the store and the registry
            entrypoint_type=EntrypointType.MODULE_PATH,  # flows.pipeline, importable anywhere
        )


def _prepared(params_path: str, interval: float | None):
    """Validated params, the server URL, the schedule and how to say it."""
    from prefect.schedules import Cron, Interval

    params = load_params(params_path)
    check_schedule(params, params_path)
    url = api_url()
    cfg = params.schedule
    schedule = (
        Interval(timedelta(seconds=interval), timezone=cfg.timezone)
        if interval
        else Cron(cfg.cron, timezone=cfg.timezone)
    )
    when = f"every {interval:g} s" if interval else f"cron '{cfg.cron}' ({cfg.timezone})"
    return params, url, schedule, when


def deploy(params_path: str = "params.yaml", pool: str = "adaptflow", interval=None) -> None:
    """Register the deployment on a work pool instead of serving it: a worker started with
    `prefect worker start --pool <pool>` (on this machine or another with the project checked
    out at the same path) runs its flow runs. The code is read from this checkout."""
    from pathlib import Path

    from flows.pipeline import pipeline_flow

    if not (Path.cwd() / "flows" / "pipeline.py").is_file():
        raise ScheduleError(
            f"{Path.cwd()} is not the project root (no flows/pipeline.py): a worker runs the "
            "code and the store of the checkout the deployment was registered from; run this "
            "from the project root"
        )
    params, url, schedule, when = _prepared(params_path, interval)
    cfg = params.schedule
    flow = pipeline_flow.from_source(
        source=str(Path.cwd()), entrypoint="flows/pipeline.py:pipeline_flow"
    )
    flow.deploy(
        name=cfg.name,
        work_pool_name=pool,
        schedules=[schedule],
        parameters=deployment_parameters(params_path, params),
        description=f"adaptflow pipeline, profile {cfg.profile}, {when}",
        tags=["adaptflow", f"profile:{cfg.profile}"],
        concurrency_limit=1,  # runs share the store and the registry
        build=False,
        push=False,
        print_next_steps=False,
    )
    print(
        f"deployed {FLOW_NAME}/{cfg.name} to work pool {pool!r} on {url}, {when}; start a "
        f"worker: prefect worker start --pool {pool}",
        flush=True,
    )


def trigger(
    params_path: str = "params.yaml", wait: bool = True, timeout: float | None = None
) -> str:
    """Start a run of the served deployment now; with `wait`, block until it ends (at most
    `timeout` seconds). Returns its final (or current) state name."""
    import httpx
    from prefect.deployments import run_deployment

    params = load_params(params_path)
    url = api_url()
    name = f"{FLOW_NAME}/{params.schedule.name}"
    found = httpx.get(f"{url.rstrip('/')}/deployments/name/{name}", timeout=10)
    if found.status_code == 404:
        raise ScheduleError(f"no deployment {name} on the server: start `make schedule` first")
    if found.status_code != 200:
        raise ScheduleError(
            f"the Prefect server at {url} answered {found.status_code} when asked for "
            f"deployment {name}; try again, or see the server's log (`make prefect-server`)"
        )
    if wait and found.json().get("status") != "READY":
        # nothing polls it: waiting would never end (--no-wait queues the run anyway)
        raise ScheduleError(
            f"deployment {name} is not served: no `make schedule` process (or worker of its "
            "work pool) is polling it; start one, or pass --no-wait to queue the run"
        )
    run = run_deployment(name, timeout=(timeout if wait else 0), as_subflow=False)
    state = run.state.name if run.state else "UNKNOWN"
    print(f"flow run {run.name} ({run.id}) of {name}: {state}", flush=True)
    if wait and run.state is not None and not run.state.is_final():
        print(f"stopped waiting after {timeout:g} s; the run goes on (see the Prefect UI)")
    return state


ParamsOpt = Annotated[str, typer.Option("--params", "-p", help="params file")]


@app.command("serve")
def serve_cmd(
    params_path: ParamsOpt = "params.yaml",
    interval: Annotated[
        float | None, typer.Option(min=1, help="run every SECONDS instead of schedule.cron")
    ] = None,
) -> None:
    """Serve the deployment on its schedule (needs a Prefect server: make prefect-server)."""
    _guard(lambda: serve(params_path, interval))


@app.command("deploy")
def deploy_cmd(
    params_path: ParamsOpt = "params.yaml",
    pool: Annotated[
        str, typer.Option(help="work pool (prefect work-pool create NAME --type process)")
    ] = "adaptflow",
    interval: Annotated[
        float | None, typer.Option(min=1, help="run every SECONDS instead of schedule.cron")
    ] = None,
) -> None:
    """Register the deployment on a work pool; a `prefect worker` runs it (instead of serve)."""
    _guard(lambda: deploy(params_path, pool, interval))


@app.command("once")
def once_cmd(
    params_path: ParamsOpt = "params.yaml",
    wait: Annotated[bool, typer.Option(help="wait for the run to end")] = True,
    timeout: Annotated[
        float | None, typer.Option(min=1, help="wait at most SECONDS (exit 1 if still running)")
    ] = None,
) -> None:
    """Trigger a run of the served deployment now (exit 1 unless it completes)."""
    state = _guard(lambda: trigger(params_path, wait, timeout))
    if wait and state != "Completed":
        raise typer.Exit(1)


def _guard(call):
    from adaptflow.data import DataError

    try:
        return call()
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        raise typer.Exit(2) from None
    except (ScheduleError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise typer.Exit(1) from None


if __name__ == "__main__":
    app()
