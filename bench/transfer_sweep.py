"""Benchmark: the transfer chain source -> features -> finetune on the `bench` profile (the full
sweep: more label fractions and source epochs than the default pipeline), printed as the
finetune report (feature extraction vs fine-tuning vs scratch, verdicts) with the wall time.

    make bench-transfer                          # profile bench, recomputed (cache ignored)
    python -m bench.transfer_sweep --set transfer.seeds=[0,1,2,3,4]

Runs are logged to MLflow (experiment `adaptflow-bench`); models register as
`adaptflow-bench-source` / `adaptflow-bench-finetune`, never under a production name.
"""

from __future__ import annotations

from rich.console import Console

from bench.common import bench_args, bench_params, canonical, print_artifact, run_stage
from bench.report_io import save_result

CHAIN = ("source", "features", "finetune")


def main(argv: list[str] | None = None) -> None:
    args = bench_args(__doc__, argv, profile="bench")
    from flows.pipeline import upstream_ref

    params = bench_params(args.params, [f"profile={args.profile}", *args.overrides])
    console = Console()
    keys: dict[str, str] = {}
    refs: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    texts: list[str] = []
    for stage in CHAIN:
        outcome, seconds[stage], device = run_stage(
            stage, params, upstream_keys=dict(keys), upstream=dict(refs)
        )
        keys[stage] = outcome.cache_key
        refs[stage] = upstream_ref(outcome.to_dict())
        texts.append(print_artifact(console, outcome.run_id, f"{stage}/report.md"))
    times = ", ".join(f"{s} {t:.0f} s" for s, t in seconds.items())
    console.print(f"\nwall time {sum(seconds.values()):.0f} s ({times}) on {device}")
    if canonical(args):
        body = "\n\n".join(texts)
        saved = save_result("transfer", body, sum(seconds.values()), f" ({times}) on {device}")
        console.print(f"written: {saved}")


if __name__ == "__main__":
    main()
