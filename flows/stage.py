"""The flow every stage shares: check inputs, then run the stage (tasks pass paths and ids)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from adaptflow.config import load_params
from adaptflow.retry import retry_transient


@task(name="check-inputs", cache_policy=NO_CACHE)
def check_inputs(stage: str, params_path: str, overrides: list[str]) -> dict[str, str]:
    """Paths of the prepared datasets the stage reads; a clear error when any is missing. An
    optional source that `prepare` skipped (its file absent) is reported, not an error: the
    stage leaves out what needs it and says why."""
    from adaptflow.data.prepare import SkippedSource, read_manifest
    from adaptflow.stages import STAGES

    params = load_params(params_path, overrides)
    out = {}
    for name in STAGES.get(stage).datasets(params):
        try:
            path, _ = read_manifest(Path(params.data.prepared_dir), name)
        except SkippedSource as e:
            if not STAGES.get(stage).optional_inputs:
                raise
            out[name] = f"skipped: {e.reason}"
            continue
        out[name] = str(path)
    return out


@task(name="run-stage", cache_policy=NO_CACHE)
def run_stage_task(
    stage: str,
    params_path: str,
    overrides: list[str],
    root: str,
    parent_run_id: str | None,
    force: bool,
    progress: bool,
    upstream_keys: dict[str, str],
    upstream: dict[str, dict],
) -> dict:
    from adaptflow.stages import StageContext, execute
    from adaptflow.tracking.store import configure
    from adaptflow.training import resolve_device

    params = load_params(params_path, overrides)
    ctx = StageContext(
        root=Path(root),
        experiment_id=configure(root, params.experiment),
        device=resolve_device(params.device),
        parent_run_id=parent_run_id,
        progress=progress,
        force=force,
        upstream_keys=upstream_keys,
        upstream=upstream,
    )
    return execute(stage, params, ctx).to_dict()


def stage_flow(stage: str):
    """The Prefect flow of one stage (a subflow of the pipeline, or run alone)."""

    # sweep units run one after another unless the pipeline passes a Dask runner
    # (adaptflow.sweep.task_runners): `.with_options(task_runner=...)`
    @flow(name=stage, task_runner=ThreadPoolTaskRunner(max_workers=1))
    def _flow(
        params_path: str = "params.yaml",
        overrides: list[str] | None = None,
        root: str = ".",
        parent_run_id: str | None = None,
        force: bool = False,
        progress: bool = True,
        upstream_keys: dict[str, str] | None = None,
        upstream: dict[str, dict] | None = None,
    ) -> dict:
        overrides = list(overrides or [])
        check_inputs(stage, params_path, overrides)
        retries = load_params(params_path, overrides).retries
        run = run_stage_task.with_options(
            retries=retries.count,
            retry_delay_seconds=retries.delay_seconds,
            retry_condition_fn=retry_transient,  # never bad params, bad data or a NaN loss
        )
        return run(
            stage,
            params_path,
            overrides,
            root,
            parent_run_id,
            force,
            progress,
            dict(upstream_keys or {}),
            dict(upstream or {}),
        )

    return _flow
