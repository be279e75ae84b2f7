"""What every benchmark shares: the command line, the params with the bench's experiment and
registry prefix forced (never the production names), and running one stage timed."""

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


RESULTS = Path(__file__).resolve().parent / "results"
# what decides every bench's numbers, besides the bench modules it runs (bench/collect.py adds
# those per bench); a result measured with any of these uncommitted is not a commit's result
CODE = ("src", "flows", "params.yaml", "pyproject.toml", "constraints.txt")
NOT_CODE = (":(exclude)bench/results",)  # the results themselves are not the code behind them


def commit() -> str:
    """The checkout's commit, "+ uncommitted changes" when CODE or bench/ differ from it."""
    import subprocess

    root = RESULTS.parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", *CODE, "bench", *NOT_CODE],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + (" + uncommitted changes" if dirty else "")


def markdown_table(table) -> str:
    """A rich Table as a markdown table (its title above it in bold)."""
    cols = table.columns
    lines = [f"**{table.title}**", ""] if table.title else []
    lines += ["| " + " | ".join(str(c.header) for c in cols) + " |"]
    lines += ["|" + "|".join("---" for _ in cols) + "|"]
    for i in range(table.row_count):
        lines.append("| " + " | ".join(str(list(c.cells)[i]) for c in cols) + " |")
    return "\n".join(lines)


def machine() -> str:
    """The CPU model, its logical CPUs, torch's thread count and any GPU: the numbers depend on
    them (a CPU's float kernels move rendered data and training; threads move verdicts)."""
    import os
    import platform
    import re

    import torch

    model = platform.processor() or platform.machine() or "unknown CPU"
    try:
        found = re.search(r"(?m)^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text())
        model = found[1].strip() if found else model
    except OSError:
        pass
    threads = torch.get_num_threads()
    where = f"{model}, {os.cpu_count()} CPUs, {threads} thread{'s' * (threads != 1)}"
    if torch.cuda.is_available():
        where += f", {torch.cuda.get_device_name(0)}"
    return re.sub(r"[;<>]", " ", where)  # kept out of the header's delimiters


def save_result(name: str, body: str, seconds: float, extra: str = "") -> Path:
    """bench/results/<name>.md: what `make bench-<name>` measured, with the date, the commit and
    the wall time (bench/collect.py gathers these into the README's Results section)."""
    import datetime

    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.md"
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    where = machine()
    head = (
        f"<!-- bench: {name}; commit: {commit()}; date: {when}; machine: {where} -->\n"
        f"`make bench-{name}` on {when}, commit {commit()}, wall {seconds / 60:.1f} min"
        f"{extra}; machine: {where}.\n\n"
    )
    path.write_text(head + body.strip() + "\n")
    return path
