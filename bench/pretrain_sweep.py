"""Benchmark: the pretrain stage's label-fraction sweep (greedy vs random init) on the default
profile, printed as a table of test accuracy mean ± std over seeds, plus the claim verdicts.

    make bench-pretrain                      # default profile, recomputed (cache ignored)
    python -m bench.pretrain_sweep --set pretrain.seeds=[0,1,2,3,4]

Runs are logged to MLflow (experiment `adaptflow-bench`) like any stage run; the model registers
as `adaptflow-bench-pretrain`, never under a production name (both are forced after `--set`).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from adaptflow.env import configure_env

BENCH = "adaptflow-bench"  # experiment and registry prefix: never the production names


def bench_params(path: str, overrides: list[str]):
    """Params with the user's overrides, then the bench's experiment and registry prefix forced."""
    from adaptflow.config import load_params

    return load_params(path, [*overrides, f"experiment={BENCH}", f"registry_prefix={BENCH}"])


def bench_args(doc: str, argv: list[str] | None, profile: str | None = None, extra=None):
    """The benchmarks' command line (--set, --params[, --profile], what `extra(parser)` adds);
    sets up the environment."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="KEY=VALUE param override"
    )
    parser.add_argument("--params", default="params.yaml")
    if profile is not None:
        parser.add_argument("--profile", default=profile, help=f"params profile ({profile})")
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    configure_env(".")
    logging.basicConfig(level=logging.WARNING)
    return args


def main(argv: list[str] | None = None) -> None:
    args = bench_args(__doc__, argv)

    from rich.console import Console
    from rich.markdown import Markdown

    from adaptflow.stages import StageContext, execute
    from adaptflow.tracking.store import configure
    from adaptflow.training import resolve_device

    params = bench_params(args.params, args.overrides)
    ctx = StageContext(
        Path("."),
        configure(".", params.experiment),
        resolve_device(params.device),
        progress=True,
        force=True,
    )
    t0 = time.perf_counter()
    outcome = execute("pretrain", params, ctx)
    seconds = time.perf_counter() - t0

    import mlflow

    verdict = mlflow.artifacts.load_text(f"runs:/{outcome.run_id}/pretrain/verdict.md")
    console = Console()
    console.print(Markdown(verdict))
    m = outcome.metrics
    console.print("\n[bold]gain of greedy over random init (test accuracy points):[/]")
    from adaptflow.evaluation.verdicts import t_quantile

    n = len(params.pretrain.seeds)
    t = t_quantile(n) if n > 1 else float("nan")
    for f in params.pretrain.label_fractions:
        hw = 100 * t * m.get(f"pretrain/f{f:g}/gain_se", float("nan"))
        console.print(
            f"  {100 * f:g}% labels: {100 * m[f'pretrain/f{f:g}/gain']:+.2f} ± {hw:.2f} "
            f"(95 % CI, {n} seeds)"
        )
    console.print(f"\nwall time {seconds:.0f} s on {ctx.device}; MLflow run {outcome.run_id}")


if __name__ == "__main__":
    main()
