"""Benchmark: the pretrain stage's label-fraction sweep (greedy vs random init) on the default
profile, printed as a table of test accuracy mean ± std over seeds, plus the claim verdicts.

    make bench-pretrain                      # default profile, recomputed (cache ignored)
    python -m bench.pretrain_sweep --set pretrain.seeds=[0,1,2,3,4]

Runs are logged to MLflow (experiment `adaptflow-bench`) like any stage run; the model registers
as `adaptflow-bench-pretrain`, never under a production name (both are forced after `--set`).
"""

from __future__ import annotations

from rich.console import Console

from bench.common import bench_args, bench_params, canonical, print_artifact, run_stage
from bench.report_io import save_result


def main(argv: list[str] | None = None) -> None:
    args = bench_args(__doc__, argv)
    params = bench_params(args.params, args.overrides)
    outcome, seconds, device = run_stage("pretrain", params)
    console = Console()
    text = print_artifact(console, outcome.run_id, "pretrain/verdict.md")
    gains = ["", "Gain of greedy over random init (test accuracy points):", ""]
    m = outcome.metrics
    console.print("\n[bold]gain of greedy over random init (test accuracy points):[/]")
    from adaptflow.evaluation.verdicts import t_quantile

    n = len(params.pretrain.seeds)
    t = t_quantile(n) if n > 1 else float("nan")
    for f in params.pretrain.label_fractions:
        hw = 100 * t * m.get(f"pretrain/f{f:g}/gain_se", float("nan"))
        line = (
            f"{100 * f:g}% labels: {100 * m[f'pretrain/f{f:g}/gain']:+.2f} ± {hw:.2f} "
            f"(95 % CI, {n} seeds)"
        )
        console.print(f"  {line}")
        gains.append(f"- {line}")
    console.print(f"\nwall time {seconds:.0f} s on {device}; MLflow run {outcome.run_id}")
    if canonical(args, profile="default"):
        extra = f" on {device}; MLflow run {outcome.run_id}"
        console.print(
            f"written: {save_result('pretrain', text + chr(10).join(gains), seconds, extra)}"
        )


if __name__ == "__main__":
    main()
