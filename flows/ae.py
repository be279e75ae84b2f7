"""Stage flow `ae`: autoencoders vs PCA on prepared images. `python -m flows.ae [--set k=v ...]`."""

from __future__ import annotations

from prefect import flow

from flows.stage import run_stage


@flow(name="ae")
def ae_flow(
    params_path: str = "params.yaml",
    overrides: list[str] | None = None,
    root: str = ".",
    parent_run_id: str | None = None,
    force: bool = False,
    progress: bool = True,
    upstream_keys: dict[str, str] | None = None,
) -> dict:
    return run_stage(
        "ae", params_path, overrides, root, parent_run_id, force, progress, upstream_keys
    )


if __name__ == "__main__":
    from adaptflow.cli import run_stage_main

    run_stage_main("ae")
