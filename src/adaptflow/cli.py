"""`adaptflow` command line: run the pipeline or one stage, prepare data, show params."""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from adaptflow.config import ParamsError, load_params
from adaptflow.env import configure_env

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
err = Console(stderr=True)

SetOpt = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="override a param: KEY=VALUE (repeatable)")
]
ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params file")]


def _validated(params_path: Path, overrides: list[str] | None):
    """Validate before anything runs: a bad param exits 2 and no MLflow run is created."""
    try:
        return load_params(params_path, overrides)
    except ParamsError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, markup=True)
        raise typer.Exit(2) from None


def _validated_against_data(params, stages: list[str]) -> None:
    """Params the prepared data cannot satisfy exit 2 too, before any run; no data exits 1."""
    from adaptflow.data import DataError
    from adaptflow.stages.validate import check_against_data

    try:
        check_against_data(params, stages)
    except ParamsError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, markup=True)
        raise typer.Exit(2) from None
    except DataError as e:
        err.print(f"[bold red]data error:[/] {escape(str(e))}")
        raise typer.Exit(1) from None


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Prefect's API calls, one per line


@app.command()
def run(
    overrides: SetOpt = None,
    stage: Annotated[
        list[str] | None,
        typer.Option(
            help="run only this stage (repeat for several; run in pipeline order, still logged "
            "under a pipeline run)"
        ),
    ] = None,
    params_path: ParamsOpt = Path("params.yaml"),
    force: Annotated[bool, typer.Option(help="ignore the cache: recompute every stage")] = False,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Run the pipeline (all stages, or --stage NAME ...) on prepared data; results go to MLflow."""
    params = _validated(params_path, overrides)
    from adaptflow.stages import STAGES

    for name in stage or []:
        if name not in STAGES:
            err.print(
                f"[bold red]error:[/] unknown stage {escape(repr(name))}; valid: {', '.join(STAGES.names())}"
            )
            raise typer.Exit(2)
    from flows.pipeline import STAGE_FLOWS

    from adaptflow.data import DataError

    chosen = [s for s in STAGE_FLOWS if s in (stage or [])] or None  # pipeline order
    _validated_against_data(params, chosen or STAGES.names())
    configure_env(".")
    _setup_logging()
    from adaptflow.tracking.store import StoreError, check_server

    try:
        check_server()  # in seconds, not after MLflow's ~4 min of retries inside the flow
    except StoreError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
        raise typer.Exit(1) from None
    from flows.pipeline import StagesFailed, ephemeral_prefect, pipeline_flow

    from adaptflow import interrupt
    from adaptflow.tracking.runs import kill_open_runs

    t0 = time.perf_counter()
    try:
        with _frozen_heap(), interrupt.handle_signals(kill_open_runs), ephemeral_prefect():
            outcomes = pipeline_flow(
                str(params_path), list(overrides or []), ".", force, progress, chosen
            )
        if interrupt.STOP.is_set():  # signalled, but the flow ran to its end: still a stop
            raise interrupt.Interrupted(interrupt.reason())
    except (DataError, StagesFailed) as e:
        if interrupt.STOP.is_set():  # a stage that failed because of the stop: a stop
            _stopped()
        if isinstance(e, DataError):
            err.print(f"[bold red]data error:[/] {escape(str(e))}")
            raise typer.Exit(1) from None
        _print_outcomes(e.outcomes, time.perf_counter() - t0, params.profile, e.failed)
        kind = "data error" if isinstance(e.__cause__, DataError) else "error"
        err.print(f"[bold red]{kind}:[/] {escape(str(e))}", highlight=False)
        raise typer.Exit(1) from None
    except StoreError as e:  # e.g. a lock another process holds past its timeout
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
        raise typer.Exit(1) from None
    except (interrupt.Interrupted, KeyboardInterrupt):
        _stopped()
    _print_outcomes(outcomes, time.perf_counter() - t0, params.profile)


@contextlib.contextmanager
def _frozen_heap():
    """The objects alive before the flow (Prefect's, MLflow's, torch's, ...) are left out of the
    garbage collections the stages trigger, and at interpreter exit the heap is frozen, so no
    last full collection walks it (seconds with torch, timm and MLflow loaded). Unfrozen when the
    flow ends: a caller in the same process (the tests) keeps collecting its garbage."""
    gc.freeze()
    atexit.unregister(gc.freeze)  # once, however many runs this process makes
    atexit.register(gc.freeze)
    try:
        yield
    finally:
        gc.unfreeze()


def _stopped() -> NoReturn:
    """Exit 143 (SIGTERM) or 130 (SIGINT) with what a stopped pipeline left behind."""
    from adaptflow import interrupt

    why = interrupt.reason() if interrupt.STOP.is_set() else "stopped by SIGINT"
    err.print(
        f"[bold red]{why}:[/] the runs it had open are ended KILLED; the stages that "
        "finished are in the cache: run the same command again to resume"
    )
    raise typer.Exit(143 if "SIGTERM" in why else 130) from None


def run_stage_main(stage: str) -> None:
    """Entry for `python -m flows.<stage>`: the same as `adaptflow run --stage <stage>`."""
    app(["run", "--stage", stage, *sys.argv[1:]])


def _print_outcomes(
    outcomes: dict, seconds: float, profile: str, failed: dict[str, str] | None = None
) -> None:
    from adaptflow.stages import STAGES

    failed = failed or {}
    verdict = f", {len(failed)} stage(s) FAILED or not run" if failed else ""
    table = Table(title=f"adaptflow pipeline ({profile}) in {seconds:.1f} s{verdict}")
    for col in ("stage", "cached", "key metrics", "model", "run id"):
        table.add_column(col)
    for name, o in outcomes.items():
        keys = STAGES.get(name).headline or tuple(o["metrics"])[:3]
        metrics = ", ".join(
            f"{k.split('/', 1)[-1]}={o['metrics'][k]:.4g}" for k in keys if k in o["metrics"]
        )
        model = f"{o['model_name']} v{o['model_version']}" if o.get("model_version") else "-"
        if o.get("model_decision"):  # the gate's decision; on a cache hit, the registry now
            model = f"{model if o.get('model_version') else o['model_name']}: {o['model_decision']}"
        if o.get("models"):  # one version per label (e.g. backbone), each gated on its own alias
            model = f"{o['model_name']}: " + ", ".join(
                f"{label} v{m['version']} {m['decision']}"
                if m.get("version")
                else f"{label} {m['decision']}"
                for label, m in o["models"].items()
            )
        table.add_row(
            name, "yes" if o["cache_hit"] else "no", metrics, escape(model), o["run_id"][:12]
        )
    for name, why in failed.items():
        status = "[yellow]not run[/]" if why.startswith("not run") else "[bold red]FAILED[/]"
        table.add_row(name, "-", f"{status} {escape(why[:300])}", "not registered", "-")
    Console().print(table)
    from adaptflow.tracking.store import shown_uri, user_uri

    server = user_uri()
    if server is not None and server.startswith(("http://", "https://")):
        Console().print(f"Browse the runs: [bold]{escape(shown_uri(server))}[/]")
    else:
        Console().print("Browse the runs: [bold]make ui[/] (MLflow UI on http://127.0.0.1:5000)")


@app.command()
def prepare(
    names: Annotated[
        list[str] | None, typer.Argument(help="sources to prepare (default: all)")
    ] = None,
    params_path: ParamsOpt = Path("params.yaml"),
) -> None:
    """DVC stage `prepare`: write data/prepared/<name>.npz + <name>.json for each data source."""
    params = _validated(params_path, None)
    from adaptflow.data import DataError, prepare_all

    try:
        prepare_all(
            params, names, log=lambda m: err.print(escape(m), highlight=False, soft_wrap=True)
        )
    except DataError as e:
        err.print(f"[bold red]data error:[/] {escape(str(e))}")
        raise typer.Exit(1) from None


@app.command("params")
def show_params(overrides: SetOpt = None, params_path: ParamsOpt = Path("params.yaml")) -> None:
    """Print the validated params (after profile and --set overrides) as JSON."""
    params = _validated(params_path, overrides)
    typer.echo(json.dumps(params.model_dump(mode="json", exclude={"profiles"}), indent=2))


@app.command()
def predict(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="registered model: NAME@ALIAS (e.g. adaptflow-pretrain@champion, "
            "adaptflow-da@champion-mnist2usps), NAME/VERSION, or a models:/ or runs:/ URI",
        ),
    ],
    input_path: Annotated[
        Path, typer.Option("--input", "-i", help=".npz/.npy array, or a folder of images")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV to write")] = Path("preds.csv"),
    x_key: Annotated[
        str | None, typer.Option(help="the npz key holding the inputs (default: x)")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 256,
) -> None:
    """Predict with a registered model: class + probabilities per row (reconstruction MSE for
    an autoencoder), checked against the model's signature; the CSV is written atomically."""
    configure_env(".")
    from adaptflow import serving
    from adaptflow.tracking.models import load_torch_model
    from adaptflow.tracking.store import StoreError, use_store

    try:
        use_store(".")
        uri = serving.model_uri(model)
        shape = serving.input_shape(uri)
        x, names = serving.read_input(input_path, shape, x_key)
        net = load_torch_model(uri, what=model)
        pred = serving.predict(net, x, names, batch_size)
        serving.write_csv(pred, out)
    except (serving.ServingError, StoreError, OSError) as e:  # FileNotFoundError too
        err.print(f"[bold red]predict:[/] {escape(str(e))}", highlight=False)
        raise typer.Exit(1) from None
    err.print(escape(f"{len(pred.rows)} rows ({pred.kind}) from {uri} -> {out}"), highlight=False)


@app.command("models")
def list_models() -> None:
    """List registered models: versions, aliases (champion...), gate decisions and reasons."""
    configure_env(".")
    from adaptflow.serving import registry_rows
    from adaptflow.tracking.store import StoreError, use_store

    try:
        use_store(".")
    except StoreError as e:
        err.print(f"[bold red]models:[/] {escape(str(e))}", highlight=False)
        raise typer.Exit(1) from None
    rows = registry_rows()
    if not rows:
        err.print("no registered models yet: run the pipeline (`make pipeline`)")
        return
    table = Table("model", "version", "aliases", "gate", "reason", "tags", "run")
    for r in rows:
        table.add_row(
            r["name"],
            r["version"],
            r["aliases"],
            r["decision"],
            r["reason"],
            r["tags"],
            r["run_id"][:12],
        )
    Console(width=200).print(table)


@app.command()
def compare(
    runs: Annotated[
        list[str] | None,
        typer.Option("--runs", help="pipeline run ids to compare (repeat: --runs A --runs B)"),
    ] = None,
    last: Annotated[int, typer.Option(min=1, help="else: the N newest finished pipeline runs")] = 2,
    experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment (default: params' experiment)")
    ] = None,
    out: Annotated[Path, typer.Option(help="folder of compare.md, img/ and compare.html")] = Path(
        "reports/compare"
    ),
    log: Annotated[
        bool, typer.Option(help="also log the report on the newest pipeline run")
    ] = True,
    overrides: SetOpt = None,
    params_path: ParamsOpt = Path("params.yaml"),
) -> None:
    """A report of pipeline runs from the store: per stage, method tables (mean ± std over
    seeds), verdicts and plots; params and metrics changed since the previous run."""
    params = _validated(params_path, overrides)
    configure_env(".")
    from mlflow.tracking import MlflowClient

    from adaptflow import compare as cmp
    from adaptflow.tracking.store import StoreError, use_store

    name = experiment or params.experiment
    try:
        use_store(".")
        exp = MlflowClient().get_experiment_by_name(name)
        if exp is None:
            raise cmp.CompareError(f"no experiment {name!r} in the store: run the pipeline first")
        chosen = cmp.pipeline_runs(exp.experiment_id, runs, last)
        report = cmp.build(chosen)
    except (StoreError, cmp.CompareError) as e:
        err.print(f"[bold red]compare:[/] {escape(str(e))}", highlight=False)
        raise typer.Exit(1) from None
    md, page = cmp.write(report, out)
    if log:
        cmp.log_on(chosen[-1], report)
    err.print(
        escape(
            f"{len(chosen)} pipeline run(s) of {name!r} -> {md} and {page}"
            + (f" (also logged on run {chosen[-1].info.run_id[:8]} under compare/)" if log else "")
        ),
        highlight=False,
    )


if __name__ == "__main__":
    app()
