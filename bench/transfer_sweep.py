"""Benchmark: the transfer chain source -> features -> finetune on the `bench` profile (the full
sweep: more label fractions and source epochs than the default pipeline), printed as the
finetune report (feature extraction vs fine-tuning vs scratch, verdicts) with the wall time.

    make bench-transfer                          # profile bench, recomputed (cache ignored)
    python -m bench.transfer_sweep --set transfer.seeds=[0,1,2,3,4]

Runs are logged to MLflow (experiment `adaptflow-bench`); models register as
`adaptflow-bench-source` / `adaptflow-bench-finetune`, never under a production name.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.pretrain_sweep import bench_args, bench_params

CHAIN = ("source", "features", "finetune")


def main(argv: list[str] | None = None) -> None:
    args = bench_args(__doc__, argv, profile="bench")

    import mlflow
    from flows.pipeline import upstream_ref
    from rich.console import Console
    from rich.markdown import Markdown

    from adaptflow.stages import StageContext, execute
    from adaptflow.tracking.store import configure
    from adaptflow.training import resolve_device

    params = bench_params(args.params, [f"profile={args.profile}", *args.overrides])
    console = Console()
    keys: dict[str, str] = {}
    refs: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    for stage in CHAIN:
        ctx = StageContext(
            Path("."),
            configure(".", params.experiment),
            resolve_device(params.device),
            progress=True,
            force=True,
            upstream_keys=dict(keys),
            upstream=dict(refs),
        )
        t0 = time.perf_counter()
        outcome = execute(stage, params, ctx)
        seconds[stage] = time.perf_counter() - t0
        keys[stage] = outcome.cache_key
        refs[stage] = upstream_ref(outcome.to_dict())
        for name in ("report.md",):
            console.print(
                Markdown(mlflow.artifacts.load_text(f"runs:/{outcome.run_id}/{stage}/{name}"))
            )
    device = resolve_device(params.device)
    times = ", ".join(f"{s} {t:.0f} s" for s, t in seconds.items())
    console.print(f"\nwall time {sum(seconds.values()):.0f} s ({times}) on {device}")


if __name__ == "__main__":
    main()
