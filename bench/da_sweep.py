"""Benchmark: the `da` stage on the `bench` profile — every method x every pair x 3 seeds at the
peer protocol's budget — printed as the stage report (per-pair tables with the measured peer and
published numbers beside ours, verdicts) with the wall time.

    make bench-da                                   # profile bench, recomputed (cache ignored)
    python -m bench.da_sweep --set "da.methods=[source_only,mcc]" --set da.seeds=[0,1,2,3,4]
    make bench-da PAIRS=mnist2usps,syn2mnist        # some pairs only (one report per call)

The whole profile takes hours on 2 CPU cores: `PAIRS` splits it into calls that can run one
after another, or side by side in two checkouts with OMP_NUM_THREADS=1 each.

Pairs needing ../shared/data are skipped (with the reason in the report) when it is absent.
Runs are logged to MLflow (experiment `adaptflow-bench`); models register as
`adaptflow-bench-da`, never under a production name.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from bench.common import bench_args, bench_params, canonical, print_artifact, run_stage
from bench.report_io import save_result


def main(argv: list[str] | None = None) -> None:
    args = bench_args(__doc__, argv, profile="bench", extra=_pairs_option)
    params = bench_params(args.params, [f"profile={args.profile}", *args.overrides])
    suffix = ""
    if args.pairs:
        params, suffix = _only_pairs(params, args.pairs)
    outcome, seconds, device = run_stage("da", params)
    console = Console()
    report = print_artifact(console, outcome.run_id, "da/report.md")
    Path("reports").mkdir(exist_ok=True)
    out = Path("reports") / f"bench-da-{params.profile}{suffix}.md"
    out.write_text(report + f"\nwall time {seconds:.0f} s on {device}\n")
    console.print(f"\nwall time {seconds:.0f} s on {device}; report written to {out}")
    if canonical(args):  # pair by pair (PAIRS=a,b): bench/results/da-a-b.md, collected together
        extra = f" on {device}; MLflow run {outcome.run_id}"
        saved = save_result(f"da{suffix}", report, seconds, extra)
        console.print(f"written: {saved}")


def _only_pairs(params, pairs_arg: str):
    """Params keeping only the comma-separated `--pairs`, and the report file's suffix."""
    wanted = [p.strip() for p in pairs_arg.split(",") if p.strip()]
    unknown = sorted(set(wanted) - set(params.da.pairs))
    if unknown:
        raise SystemExit(
            f"--pairs: {', '.join(unknown)} not in da.pairs of profile {params.profile!r} "
            f"(there: {', '.join(params.da.pairs)})"
        )
    pairs = {k: v for k, v in params.da.pairs.items() if k in wanted}
    params = params.model_copy(update={"da": params.da.model_copy(update={"pairs": pairs})})
    return params, "-" + "-".join(pairs)


def _pairs_option(parser) -> None:
    parser.add_argument(
        "--pairs", default="", help="comma-separated da.pairs labels (default: all)"
    )


if __name__ == "__main__":
    main()
