"""What every benchmark shares: the command line, the params with the bench's experiment and
registry prefix forced (never the production names), and running one stage timed. How a result
is written down is bench/report_io.py's: a change there decides no number.

A stage runs here outside a Prefect flow, so its sweep units run in turn in this process
(adaptflow.sweep): a stage bench's imports are all the code behind its numbers."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from adaptflow.env import configure_env
from bench.report_io import save_result

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


def run_stage(stage: str, params, **upstream):
    """Execute `stage` recomputed (cache ignored) in the current directory's store.

    `upstream` is passed to the StageContext (`upstream_keys`, `upstream`). Returns the
    outcome, the wall seconds and the device it ran on."""
    from adaptflow.stages import StageContext, execute
    from adaptflow.tracking.store import configure
    from adaptflow.training import resolve_device

    device = resolve_device(params.device)
    ctx = StageContext(
        Path("."),
        configure(".", params.experiment),
        device,
        force=True,
        **upstream,
    )
    t0 = time.perf_counter()
    outcome = execute(stage, params, ctx)
    return outcome, time.perf_counter() - t0, device


def print_artifact(console, run_id: str, path: str) -> str:
    """Render a run's markdown artifact on `console`; returns its text."""
    import mlflow
    from rich.markdown import Markdown

    text = mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")
    console.print(Markdown(text))
    return text


def bench_stage(doc: str, stage: str, report: str, argv: list[str] | None) -> None:
    """The one-stage benchmarks: run `stage` on the bench profile (recomputed), print its
    `report` artifact and the wall time."""
    from rich.console import Console

    args = bench_args(doc, argv, profile="bench")
    params = bench_params(args.params, [f"profile={args.profile}", *args.overrides])
    outcome, seconds, device = run_stage(stage, params)
    console = Console()
    text = print_artifact(console, outcome.run_id, report)
    console.print(f"\nwall time {seconds:.0f} s on {device}")
    if canonical(args):
        saved = save_result(stage, text, seconds, f" on {device}; MLflow run {outcome.run_id}")
        console.print(f"written: {saved}")


def canonical(args, profile: str = "bench") -> bool:
    """A bench run as `make bench-<name>` runs it (its profile, no --set): the one whose
    numbers go to bench/results/ and the README."""
    return (
        not args.overrides
        and args.params == "params.yaml"
        and getattr(args, "profile", profile) == profile
    )
