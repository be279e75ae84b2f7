"""The parent flow: one MLflow parent run, each stage flow as a subflow with a nested run.

`python -m flows.pipeline [--set k=v ...]` or `adaptflow run`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from prefect import flow

from adaptflow.config import load_params
from flows.ae import ae_flow
from flows.pretrain import pretrain_flow

STAGE_FLOWS = {"ae": ae_flow, "pretrain": pretrain_flow}  # pipeline order


def _write_metrics(path: Path, outcomes: dict[str, dict]) -> None:
    """reports/metrics.json for `dvc metrics show`, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {k: v for o in outcomes.values() for k, v in o["metrics"].items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(body, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


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
    from adaptflow.tracking.models import ensure_champion
    from adaptflow.tracking.store import configure

    overrides = list(overrides or [])
    params = load_params(params_path, overrides)
    experiment_id = configure(root, params.experiment)
    chosen = stages or list(STAGE_FLOWS)
    outcomes: dict[str, dict] = {}
    tags = {
        "adaptflow.kind": "pipeline",
        "adaptflow.profile": params.profile,
        "adaptflow.seed": str(params.seed),
        "adaptflow.git_commit": runs.git_commit(root),
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
        for name in chosen:
            spec = STAGES.get(name)
            upstream = {d: outcomes[d]["cache_key"] for d in spec.depends_on if d in outcomes}
            out = STAGE_FLOWS[name](
                params_path, overrides, root, parent.info.run_id, force, progress, upstream
            )
            if out["model_name"] and out["model_version"]:
                out["champion_version"] = ensure_champion(out["model_name"], out["model_version"])
            outcomes[name] = out
        runs.log_metrics({k: v for o in outcomes.values() for k, v in o["metrics"].items()})
        runs.log_metrics({"pipeline/stages_cached": sum(o["cache_hit"] for o in outcomes.values())})
    _write_metrics(Path(root) / "reports" / "metrics.json", outcomes)
    return outcomes


if __name__ == "__main__":
    import sys

    from adaptflow.cli import app

    app(["run", *sys.argv[1:]])
