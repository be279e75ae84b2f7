"""Benchmark: what orchestration costs. `adaptflow run` (Prefect + MLflow + registry) vs the
same stage functions called in a plain Python loop, the cache's warm ÷ cold run, peak memory,
and how wall time scales with data size and with the number of sweep runs.

    make bench-pipeline                          # smoke, 3 default pairs + scaling, ~1.5 h
    make bench-pipeline PIPELINE_PAIRS=5         # the same with 5 default pairs (~+50 min)
    python -m bench.pipeline_overhead --profile smoke --no-scaling     # ~4 min

Everything runs in a scratch project (a temporary folder: its own MLflow store and Prefect
home, whose database is created beforehand as a project's would be; the prepared data read from
this checkout), each measurement in a fresh process, one
after another (never two at once on the 2 cores):

- pipeline: `adaptflow run --force` in a child process, cold (a new store). The child times,
  outermost first: importing adaptflow's CLI and flows; Prefect's start (the flow call until
  its body runs: the temporary server); every MlflowClient call (the tracking: runs, params,
  metrics, tags, artifacts, the registry; mlflow's fluent API goes through it); model logging
  (`log_torch_model`: the pickled model, its signature and code; and `load_torch_model`, an
  upstream stage's model loaded back); plots (figures rendered and logged). The rest is the
  stages' compute plus Prefect's flow/task bookkeeping.
- plain loop: the same stages' `execute()` in turn in a child process, no Prefect (the stages'
  sweep units run directly), with the same timers. Its "bare" time is its wall minus tracking,
  model logging and plots, plus the imports a bare script needs (torch, timm, scikit-learn):
  what the same computation costs without Prefect and MLflow.
- ratio = pipeline process wall ÷ bare (goal ≤ 1.10 on the default profile). One pipeline run
  against one loop run is a single sample (at 154d3e0 the pipeline's compute came out 51 s
  longer than the loop's, at 87a9ecb on another machine 12 s shorter), so the default profile
  runs `--pairs` (3) pairs, alternating which goes first, and decides the goal on the 95 % t
  interval of the pairs' mean log ratio: met when it lies at or below the goal, NOT met when
  above, undetermined when it straddles it (more pairs narrow it). The table shows each part's
  mean over the pairs.
- cache: the same `adaptflow run` again (no --force) ÷ the cold run (goal ≤ 0.05), decided per
  pair like the ratio; the bench stops if the cold run took a stage from the cache or the warm
  one recomputed any.
- exit: from the child's last line to its end (interpreter finalisation; in the pipeline also
  the atexit handler that stops Prefect's temporary server), its own row, not counted as
  imports.
- memory: the pipeline process's peak RSS (its own `ru_maxrss`) and, sampled every 0.2 s, with
  its children (Prefect's server); the goal (< 4 GiB) is decided on a bound: the process's own
  peak + its children's sampled peak; the CPU seconds the server used (its share of the cores).
- other processes: the CPU seconds the whole machine spent beside each measurement's own
  process tree (system busy time minus the tree's, from /proc via psutil and getrusage) and
  the hypervisor's steal: a busy machine shows there.
- scaling (stage `pretrain`): wall vs training-set size 1×/2×/4× (800 images at 1×, the
  default encoder and epochs) and vs the number of sweep runs (seeds) 1/4/16/32/64 at smoke
  sizes, pipeline and plain loop; the per-run overhead is the slope of (pipeline − bare) over
  runs, decided on its 95 % t interval (goal < 1 s); each axis's overhead slope is shown with
  its interval. A plot goes to bench/results/scaling.png.
- before the first measurement, one untimed child imports what the children import (a cold
  page cache would be charged to whichever side ran first).

The tables go to stdout and to bench/results/pipeline.md (with the date and commit; the README's
Results section is collected from bench/results/ by `make bench-results`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
RATIO_GOAL, CACHE_GOAL, PER_RUN_GOAL, RSS_GOAL_GIB = 1.10, 0.05, 1.0, 4.0
PARTS = ("imports", "exit", "prefect start", "tracking", "model logging", "plots", "rest")
PAIRS = {"smoke": 1, "default": 3}  # pipeline/loop pairs per profile (--pairs overrides default)
SCALE_DATA = (1, 2, 4)
# 32 and 64 give the slope a lever and 3 degrees of freedom (1, 4, 16 alone: one)
SCALE_RUNS = (1, 4, 16, 32, 64)
SCALE_BASE = 800  # training images at 1× (the split has 3,600 outside the monitor images)
# the data axis: smoke's pretrain with the default encoder and more epochs, one seed, so the
# computation (not the fixed start-up) grows with the data
SCALE_DATA_SET = (
    "pretrain.layers=[500,250,100]",
    "pretrain.pretrain.epochs=20",
    "pretrain.epochs=30",
    "pretrain.seeds=[0]",
)
# adaptflow.tracking.runs' functions that do tracking work beside their MlflowClient calls
TRACKING_HELPERS = (
    "log_params",
    "log_metrics",
    "flush_metrics",
    "log_dataset",
    "set_tags",
    "log_text",
    "log_arrays",
    "load_arrays",
    "log_text_to",
    "set_model_tags",
    "set_labelled_models",
    "record_artifacts",
    "find_cached",
    "cache_broken",
    "replay_cached",
)
# what a bare script would import too, when the plain loop imported it before its first stage
BARE_MODULES = ("numpy", "torch", "timm", "sklearn", "scipy", "pandas", "torchvision")
# the scratch store is thrown away, but its runs and versions still carry the bench's names
BENCH_NAMES = ["experiment=adaptflow-bench", "registry_prefix=adaptflow-bench"]


# ---------------------------------------------------------------- in the child process
class Timers:
    """Seconds per category; a call inside a timed call counts once, for the outermost."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._depth = threading.local()

    def wrap(self, owner, attr: str, category: str) -> None:
        fn = getattr(owner, attr)

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            depth = getattr(self._depth, "n", 0)
            if depth:
                return fn(*args, **kwargs)
            self._depth.n = 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[category] += time.perf_counter() - t0
                self._depth.n = 0

        setattr(owner, attr, timed)


def _install(timers: Timers) -> None:
    import matplotlib.figure
    import matplotlib.pyplot  # noqa: F401  (the stages' plots import it: an import, not a plot)
    from mlflow.tracking import MlflowClient

    from adaptflow.stages import base
    from adaptflow.tracking import models, runs

    timers.wrap(models, "log_torch_model", "model logging")
    timers.wrap(models, "load_torch_model", "model logging")  # an upstream stage's, loaded back
    for name in ("log_figure", "log_gif", "log_image_step"):
        timers.wrap(runs, name, "plots")
    for name in TRACKING_HELPERS:  # adaptflow's own work around MLflow calls (npz, digests)
        timers.wrap(runs, name, "tracking")
    timers.wrap(base, "cache_key", "tracking")
    timers.wrap(matplotlib.figure.Figure, "savefig", "plots")
    for name in dir(MlflowClient):
        if not name.startswith("_") and callable(getattr(MlflowClient, name)):
            timers.wrap(MlflowClient, name, "tracking")


def child_pipeline(args: list[str]) -> dict:
    t0 = time.perf_counter()
    from adaptflow import cli
    from flows import pipeline

    timers = Timers()
    _install(timers)  # imports matplotlib and mlflow's client: counted as imports in both children
    imported = time.perf_counter()
    started: list[float] = []
    real_started = pipeline._started

    def _started() -> None:
        started.append(time.perf_counter())
        real_started()

    pipeline._started = _started
    called: list[float] = []
    real_flow = pipeline.pipeline_flow

    outcomes: dict[str, dict] = {}

    def pipeline_flow(*a, **k):  # what cli.run calls (it imports it at call time)
        called.append(time.perf_counter())
        out = real_flow(*a, **k)
        outcomes.update(out)
        return out

    pipeline.pipeline_flow = pipeline_flow
    code = cli.app(["run", "--no-progress", *args], standalone_mode=False)
    if code:  # typer.Exit(n) comes back as n outside standalone mode
        raise SystemExit(code)
    end = time.perf_counter()
    return {
        "imports": imported - t0,
        "prefect start": (started[0] - called[0]) if started and called else 0.0,
        "in_process": end - t0,
        "stages": len(outcomes),
        "cached": sum(bool(o.get("cache_hit")) for o in outcomes.values()),
        **timers.seconds,
    }


def child_loop(overrides: list[str], stages: list[str]) -> dict:
    """The stages' execute() in turn, as the pipeline orders and feeds them, no Prefect."""
    t0 = time.perf_counter()
    from flows.pipeline import STAGE_FLOWS, upstream_ref

    from adaptflow.config import load_params
    from adaptflow.env import configure_env
    from adaptflow.stages import StageContext, execute
    from adaptflow.tracking.store import configure
    from adaptflow.training import resolve_device

    configure_env(".")
    eager = sorted(m for m in BARE_MODULES if m in sys.modules)  # before _install's imports
    timers = Timers()
    _install(timers)
    imported = time.perf_counter()
    params = load_params("params.yaml", overrides)
    exp = configure(".", params.experiment)
    device = resolve_device(params.device)
    outcomes: dict[str, dict] = {}
    for name in [s for s in STAGE_FLOWS if s in stages]:
        from adaptflow.stages import STAGES

        done = [d for d in STAGES.get(name).depends_on if d in outcomes]
        ctx = StageContext(
            Path("."),
            exp,
            device,
            force=True,
            progress=False,
            upstream_keys={d: outcomes[d]["cache_key"] for d in done},
            upstream={d: upstream_ref(outcomes[d]) for d in done},
        )
        outcomes[name] = execute(name, params, ctx).to_dict()
    end = time.perf_counter()
    return {"imports": imported - t0, "in_process": end - t0, "eager": eager, **timers.seconds}


# ---------------------------------------------------------------- in the parent
def _env(project: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "PREFECT_API"))
    }
    env["PREFECT_HOME"] = str(project / ".prefect")
    # one font cache for every child (a fresh project's would be rebuilt in each measurement)
    env["MPLCONFIGDIR"] = os.environ.get("MPLCONFIGDIR", str(REPO / ".cache" / "matplotlib"))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _child(project: Path, mode: str, payload: dict) -> tuple[float, dict]:
    """Run this module's child `mode` in `project`; (parent-measured wall, what it reported,
    with the peak RSS of the child (its own) and of it with its children (sampled), the CPU
    seconds its children used (sampled), the seconds from its last line to its end (exit), and
    the CPU seconds other processes and the hypervisor (steal) took meanwhile)."""
    out, log = project / f"child-{mode}.json", project / f"child-{mode}.log"
    cmd = [sys.executable, "-m", "bench.pipeline_overhead", "--child", mode, json.dumps(payload)]
    machine0, ours0 = psutil.cpu_times(), _our_cpu()
    t0 = time.perf_counter()
    with log.open("w") as sink:
        proc = psutil.Popen(
            [*cmd, "--child-out", str(out)],
            cwd=project,
            env=_env(project),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        peak_tree = peak_kids = 0
        cpu: dict[int, float] = {}  # the children's CPU seconds, last seen per pid
        while proc.poll() is None:  # every 0.2 s: the process with its children
            try:
                kids = proc.children(recursive=True)
                kids_rss = sum(c.memory_info().rss for c in kids)
                tree = proc.memory_info().rss + kids_rss
                for c in kids:
                    t = c.cpu_times()
                    cpu[c.pid] = t.user + t.system
            except psutil.Error:  # a child ended between the listing and the reading
                pass
            else:
                peak_tree, peak_kids = max(peak_tree, tree), max(peak_kids, kids_rss)
            time.sleep(0.2)
    ended = time.time()
    machine1, ours1 = psutil.cpu_times(), _our_cpu()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{mode} failed ({proc.returncode}):\n{log.read_text()[-4000:]}")
    result = json.loads(out.read_text())
    own = result.pop("maxrss_kib") * 1024
    result["rss"] = {
        "self": own / 1024**3,
        "tree": max(peak_tree, own) / 1024**3,
        # the process's exact peak + its children's sampled one: at or above the tree's peak
        # unless a child's peak fell between two samples
        "bound": (own + peak_kids) / 1024**3,
    }
    result["children_cpu"] = sum(cpu.values())
    result["exit"] = max(0.0, ended - result.pop("done_at"))  # ± the 0.2 s of the polling
    result["others_cpu"] = max(0.0, (_busy(machine1) - _busy(machine0)) - (ours1 - ours0))
    result["steal"] = getattr(machine1, "steal", 0.0) - getattr(machine0, "steal", 0.0)
    return wall, result


def _busy(t) -> float:
    """The machine's busy CPU seconds in a psutil.cpu_times() (guest time is inside user)."""
    return sum(getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq"))


def _our_cpu() -> float:
    """CPU seconds of this process and of its ended (waited-for) children and theirs."""
    import resource

    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


_BARE_IMPORTS: dict[tuple[str, ...], float] = {}


def _bare_imports(project: Path, modules: list[str]) -> float:
    """A bare script's interpreter start + `import <modules>` (min of 3; once per list)."""
    if tuple(modules) in _BARE_IMPORTS:
        return _BARE_IMPORTS[tuple(modules)]
    code = f"import {', '.join(modules)}" if modules else "pass"
    best = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=_env(project))
        best.append(time.perf_counter() - t0)
    _BARE_IMPORTS[tuple(modules)] = min(best)
    return min(best)


@contextlib.contextmanager
def scratch_project():
    """A temporary project: params.yaml from this checkout, its own store and Prefect home."""
    with tempfile.TemporaryDirectory(prefix="adaptflow-bench-") as tmp:
        project = Path(tmp)
        shutil.copy(REPO / "params.yaml", project / "params.yaml")
        # Prefect's database is created once per project, not per run: not part of a cold run
        subprocess.run(
            [sys.executable, "-m", "prefect", "server", "database", "upgrade", "--yes"],
            cwd=project,
            env=_env(project),
            check=True,
            capture_output=True,
        )
        yield project


WARM_UP = "import adaptflow.cli, flows.pipeline, torch, timm, sklearn, mlflow, matplotlib.pyplot"


def _warm_up() -> None:
    """One untimed child before the first measurement: it reads the interpreter's and the
    libraries' files into the page cache, which the first timed child paid for alone (at
    c7eda36 the smoke profile's first pipeline took 24.5 s to start, the runs after it 4.1–4.4)."""
    print("warm-up (untimed): imports in a child process ...", flush=True)
    with scratch_project() as project:
        subprocess.run([sys.executable, "-c", WARM_UP], cwd=project, env=_env(project), check=True)


def _prepared_dir() -> str:
    path = REPO / "data" / "prepared"
    if not any(path.glob("*.json")):
        sys.exit(f"no prepared data in {path}: run `make data` first")
    return str(path)


def overhead(profile: str, pairs: int) -> dict:
    """`pairs` × (cold pipeline + its warm re-run, plain loop), each in a fresh scratch store;
    odd pairs run the loop first, so a drift of the machine does not always favour one side."""
    from flows.pipeline import STAGE_FLOWS

    overrides = [f"profile={profile}", f"data.prepared_dir={_prepared_dir()}", *BENCH_NAMES]
    stages = list(STAGE_FLOWS)  # what `adaptflow run` runs without --stage
    runs = []
    for i in range(pairs):
        tag = f"[{profile}, pair {i + 1}/{pairs}]"
        r: dict = {}

        def pipeline_side(r=r, tag=tag) -> None:
            with scratch_project() as project:
                print(f"{tag} pipeline, cold ...", flush=True)
                r["cold_wall"], r["cold"] = _child(
                    project, "pipeline", {"args": _set(overrides) + ["--force"]}
                )
                print(f"{tag} pipeline, warm (unchanged re-run) ...", flush=True)
                r["warm_wall"], r["warm"] = _child(project, "pipeline", {"args": _set(overrides)})

        def loop_side(r=r, tag=tag) -> None:
            with scratch_project() as project:
                print(f"{tag} plain loop ...", flush=True)
                r["loop_wall"], r["loop"] = _child(
                    project, "loop", {"overrides": overrides, "stages": stages}
                )
                r["bare_imports"] = _bare_imports(project, r["loop"]["eager"])

        for side in (loop_side, pipeline_side) if i % 2 else (pipeline_side, loop_side):
            side()
        check_cache(r["cold"], r["warm"], tag)
        r["bare"] = _bare(r["loop"], r["bare_imports"])
        r["ratio"] = r["cold_wall"] / r["bare"]
        runs.append(r)
    return {"profile": profile, "pairs": runs}


def check_cache(cold: dict, warm: dict, tag: str) -> None:
    """The cold run computed every stage and the warm re-run took every one from the cache;
    else warm ÷ cold does not measure the cache and the bench stops, saying which."""
    problems = []
    if not cold.get("stages") or cold.get("cached"):
        problems.append(
            f"the cold run (--force) took {cold.get('cached')} of "
            f"{cold.get('stages')} stages from the cache"
        )
    if warm.get("stages") != cold.get("stages") or warm.get("cached") != warm.get("stages"):
        problems.append(
            f"the warm re-run took {warm.get('cached')} of {warm.get('stages')} "
            f"stages from the cache (the cold run had {cold.get('stages')})"
        )
    if problems:
        raise SystemExit(
            f"{tag} " + "; ".join(problems) + ": warm ÷ cold would not measure "
            "the cache (is a stage's cache key not deterministic?)"
        )


def ratio_verdict(ratios: list[float], goal: float = RATIO_GOAL) -> str:
    """The goal over the pairs: the 95 % t interval of their mean log ratio (the trainer
    bench's rule, turned round: lower is better) — met at or below the goal, NOT met above it,
    undetermined across it; one pair measures no noise and says so."""
    if len(ratios) < 2:
        word = "met" if ratios[0] <= goal else "NOT met"
        return f"{word} in the one pair run (its noise is not measured)"
    from bench.trainer_overhead import verdict

    # 1/ratio against 1/goal: the interval of a log is symmetric, so this is exact
    gmean, low, high, word = verdict([1 / x for x in ratios], 1 / goal)
    word = {"yes": "met", "NO": "NOT met", "undetermined": "undetermined"}[word]
    more = ": more pairs narrow it (--pairs)" if word == "undetermined" else ""
    return f"{word}; geometric mean {1 / gmean:.3f} [95 % CI {1 / high:.3f}, {1 / low:.3f}]{more}"


def _bare(loop: dict, bare_imports: float) -> float:
    """The plain loop's compute: its in-process time without its imports, tracking, model
    logging and plots, plus a bare script's interpreter start and the imports of the loop's
    that a bare script needs too (torch, timm, ...; what the stages import lazily stays in)."""
    logged = sum(loop.get(k, 0.0) for k in ("imports", "tracking", "model logging", "plots"))
    return loop["in_process"] - logged + bare_imports


def _set(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def _parts(child: dict, wall: float) -> dict[str, float]:
    """The child's wall split into PARTS (start-up before the child's first line: imports;
    after its last line: exit)."""
    named = {k: child.get(k, 0.0) for k in PARTS if k not in ("imports", "rest")}
    imports = child["imports"] + (wall - child["in_process"] - child["exit"])  # + start-up
    rest = wall - imports - sum(named.values())
    return {"imports": imports, **named, "rest": rest}


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def overhead_table(r: dict) -> str:
    runs = r["pairs"]
    parts = {
        side: {k: _mean(_parts(p[side], p[f"{side}_wall"])[k] for p in runs) for k in PARTS}
        for side in ("cold", "loop", "warm")
    }
    wall = {side: _mean(p[f"{side}_wall"] for p in runs) for side in ("cold", "loop", "warm")}
    bare, bare_imports = _mean(p["bare"] for p in runs), _mean(p["bare_imports"] for p in runs)
    ratios = [p["ratio"] for p in runs]
    label = {
        "imports": "interpreter start + imports",
        "exit": "interpreter exit (finalisation; the pipeline's stops Prefect's server)",
        "prefect start": "Prefect start (flow call until its body runs)",
        "tracking": "tracking: MLflow calls, adaptflow's logging and cache around them",
        "model logging": "model logging (and upstream models loaded back)",
        "plots": "plots (render + log)",
        "rest": "the rest: stage compute (+ Prefect bookkeeping)",
    }
    on = " on default" if r["profile"] != "default" else ""
    goal, cache_goal = f"goal ≤ {RATIO_GOAL:.2f}{on}", f"goal ≤ {CACHE_GOAL:.2f}{on}"
    each = ", ".join(f"{x:.3f}" for x in ratios)
    cache = [p["warm_wall"] / p["cold_wall"] for p in runs]  # decided per pair, as the ratio
    each_cache = ", ".join(f"{x:.3f}" for x in cache)
    mean_of = f"mean of {len(runs)} pairs" if len(runs) > 1 else "one pair"
    lines = [
        f"**profile {r['profile']}** — pipeline ÷ bare = **{each}** ({goal}: "
        f"{ratio_verdict(ratios)}); warm ÷ cold = **{each_cache}** ({cache_goal}: "
        f"{ratio_verdict(cache, CACHE_GOAL)}; the warm run {wall['warm']:.1f} s, {mean_of})",
        "",
        f"| part (s, {mean_of}) | pipeline, cold | plain loop | pipeline, warm (cache) |",
        "|---|---|---|---|",
    ]
    for k in PARTS:
        lines.append(
            f"| {label[k]} | {parts['cold'][k]:.1f} | {parts['loop'][k]:.1f} "
            f"| {parts['warm'][k]:.1f} |"
        )
    eager = ", ".join(runs[0]["loop"]["eager"])
    bound = max(p["cold"]["rss"].get("bound", p["cold"]["rss"]["tree"]) for p in runs)
    cpu = [p["cold"]["children_cpu"] for p in runs]
    others = [f"{p[s]['others_cpu']:.0f}" for p in runs for s in ("cold", "loop")]
    steal = sum(p[s]["steal"] for p in runs for s in ("cold", "loop"))
    lines += [
        f"| **wall** | **{wall['cold']:.1f}** | **{wall['loop']:.1f}** | **{wall['warm']:.1f}** |",
        "",
        f"- bare = plain loop − its imports − tracking − model logging − plots + a bare script's "
        f"start and imports ({bare_imports:.1f} s, measured once per bench: `import {eager}`) = "
        f"{bare:.1f} s; figures "
        "built before `savefig` stay in bare (not separable)",
        f"- Prefect's bookkeeping ≈ rest(pipeline) − rest(plain loop) = "
        f"{parts['cold']['rest'] - parts['loop']['rest']:+.1f} s (the spread between "
        "two runs of the same stages included); Prefect's server used "
        f"{', '.join(f'{c:.1f}' for c in cpu)} CPU s in the cold run (niced: "
        "`flows.pipeline.SERVER_NICE`)",
        "- peak RSS: the pipeline process "
        f"{max(p['cold']['rss']['self'] for p in runs):.2f} GiB (`ru_maxrss`), with its "
        f"children (Prefect's server; sampled every 0.2 s) "
        f"{max(p['cold']['rss']['tree'] for p in runs):.2f} GiB, at most {bound:.2f} GiB (its "
        f"own peak + the children's; goal < {RSS_GOAL_GIB:.0f} GiB: **{rss_verdict(bound)}**); "
        f"the plain loop {max(p['loop']['rss']['self'] for p in runs):.2f} GiB",
        f"- other processes' CPU seconds beside each cold pipeline / plain loop: "
        f"{', '.join(others)}; the hypervisor's steal, all of them: {steal:.0f} s",
    ]
    return "\n".join(lines)


def scaling() -> dict:
    """Stage pretrain: wall vs data size (SCALE_DATA_SET) and vs sweep runs (smoke sizes),
    pipeline and loop."""
    data = f"data.prepared_dir={_prepared_dir()}"
    base = ["profile=smoke", data, *BENCH_NAMES]
    cases = [
        ("data", k, [f"pretrain.max_train={SCALE_BASE * k}", *SCALE_DATA_SET]) for k in SCALE_DATA
    ]
    cases += [("runs", k, [f"pretrain.seeds=[{','.join(map(str, range(k)))}]"]) for k in SCALE_RUNS]
    rows = []
    for axis, k, extra in cases:
        overrides = [*base, *extra]
        with scratch_project() as project:
            print(f"[scaling] {axis} {k}: pipeline ...", flush=True)
            wall, child = _child(
                project, "pipeline", {"args": [*_set(overrides), "--stage", "pretrain", "--force"]}
            )
        with scratch_project() as project:
            print(f"[scaling] {axis} {k}: plain loop ...", flush=True)
            lwall, loop = _child(project, "loop", {"overrides": overrides, "stages": ["pretrain"]})
            bare = _bare(loop, _bare_imports(project, loop["eager"]))
        rows.append({"axis": axis, "k": k, "pipeline": wall, "loop": lwall, "bare": bare})
    return {"rows": rows}


def _fit(xs, ys) -> tuple[float, float]:
    import numpy as np

    slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(slope), float(intercept)


def slope_ci(xs, ys) -> tuple[float, float, float]:
    """Least-squares slope of ys over xs and its 95 % t interval (n − 2 degrees of freedom)."""
    import numpy as np
    from scipy import stats

    x, y = np.asarray(xs, float), np.asarray(ys, float)
    if len(x) < 3:
        raise ValueError(f"a slope's interval needs at least 3 points, got {len(x)}")
    slope, intercept = _fit(x, y)
    resid = y - (intercept + slope * x)
    se = np.sqrt(resid @ resid / (len(x) - 2) / ((x - x.mean()) @ (x - x.mean())))
    half = stats.t.ppf(0.975, len(x) - 2) * se
    return float(slope), float(slope - half), float(slope + half)


def below_verdict(low: float, high: float, goal: float) -> str:
    """A quantity that should stay below `goal`, from its 95 % interval: met when the interval
    lies below it, NOT met when above, undetermined when it straddles it."""
    return "met" if high < goal else "NOT met" if low > goal else "undetermined"


def rss_verdict(peak_gib: float, goal: float = RSS_GOAL_GIB) -> str:
    """Peak memory against its goal (one number: its bound, no interval)."""
    return "met" if peak_gib < goal else "NOT met"


def scaling_table(s: dict) -> tuple[str, float]:
    rows = s["rows"]
    runs = [r for r in rows if r["axis"] == "runs"]
    ks, over = [r["k"] for r in runs], [r["pipeline"] - r["bare"] for r in runs]
    per_run, fixed = _fit(ks, over)
    _, low, high = slope_ci(ks, over)
    word = below_verdict(low, high, PER_RUN_GOAL)
    lines = [
        f"Stage `pretrain`. Data axis: {SCALE_BASE} training images at 1×, "
        f"`{' '.join(SCALE_DATA_SET)}`; runs axis: smoke sizes. "
        f"Per-run overhead (slope of pipeline − bare over sweep "
        f"runs; a run = one seed's sweep unit: a Prefect task and its MLflow runs: pretraining, "
        f"2 label fractions × 2 arms) = **{per_run:.2f} s [95 % CI {low:.2f}, {high:.2f}]** "
        f"(goal < {PER_RUN_GOAL:.0f} s: **{word}**; t interval of the slope, "
        f"{len(ks) - 2} degrees of freedom); fixed overhead {fixed:.1f} s.",
        "",
        "| axis | × | pipeline s | plain loop s | bare s | pipeline − bare s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        what = f"{SCALE_BASE * r['k']} images" if r["axis"] == "data" else f"{r['k']} runs"
        lines.append(
            f"| {r['axis']} | {what} | {r['pipeline']:.1f} | {r['loop']:.1f} | {r['bare']:.1f} "
            f"| {r['pipeline'] - r['bare']:.1f} |"
        )
    for axis in ("data", "runs"):  # does the overhead (pipeline − bare) grow along the axis?
        sel = [r for r in rows if r["axis"] == axis]
        over = [r["pipeline"] - r["bare"] for r in sel]
        slope, icept = _fit([r["k"] for r in sel], over)
        _, low, high = slope_ci([r["k"] for r in sel], over)
        grows = (
            "grows" if low > 0 else "shrinks" if high < 0 else "neither growth nor decline shown"
        )
        resid = [o - (icept + slope * r["k"]) for o, r in zip(over, sel, strict=True)]
        lines.append(
            f"\n- {axis}: pipeline − bare ≈ {icept:.1f} {slope:+.2f}·× s "
            f"(slope 95 % CI [{low:.2f}, {high:.2f}]: {grows}; bare grows "
            f"{_fit([r['k'] for r in sel], [r['bare'] for r in sel])[0]:.1f} s per ×); "
            f"residuals {', '.join(f'{x:+.1f}' for x in resid)} s"
        )
    return "\n".join(lines), per_run


def scaling_plot(s: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, axis, xlabel in zip(
        axes,
        ("data", "runs"),
        (f"training images (× {SCALE_BASE})", "sweep runs (seeds)"),
        strict=True,
    ):
        sel = [r for r in s["rows"] if r["axis"] == axis]
        xs = [r["k"] for r in sel]
        for key, style in (("pipeline", "o-"), ("bare", "s--")):
            ax.plot(xs, [r[key] for r in sel], style, label=key)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("wall s")
        ax.set_xticks(xs)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_title("wall vs data size")
    axes[1].set_title("wall vs number of runs")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="append", help="smoke and/or default (both)")
    parser.add_argument("--no-scaling", action="store_true")
    parser.add_argument(
        "--pairs", type=int, help=f"pipeline/loop pairs of the default profile ({PAIRS['default']})"
    )
    parser.add_argument("--out", type=Path, help="write the report here, not bench/results/")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("payload", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        from adaptflow.env import configure_env

        configure_env(".")
        payload = json.loads(args.payload)
        if args.child == "pipeline":
            result = child_pipeline(payload["args"])
        else:
            result = child_loop(payload["overrides"], payload["stages"])
        import resource

        result["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
        result["done_at"] = time.time()  # the rest until the process ends is its exit
        args.child_out.write_text(json.dumps(result))
        return

    # the result the README shows: every part, at least the default pairs (more narrow the
    # interval: `make bench-pipeline PIPELINE_PAIRS=5`); anything less is a probe (reports/, not kept)
    canonical = (
        args.profile is None
        and not args.no_scaling
        and args.out is None
        and (args.pairs is None or args.pairs >= PAIRS["default"])
    )
    if args.pairs is not None and args.pairs < 1:
        parser.error(f"--pairs must be at least 1, got {args.pairs}")
    t0 = time.perf_counter()
    _warm_up()
    sections = [f"{os.cpu_count()} CPU cores; every measurement in a fresh process.\n"]
    raw: dict = {}
    for profile in args.profile or ["smoke", "default"]:
        pairs = (
            args.pairs if args.pairs is not None and profile == "default" else PAIRS.get(profile, 1)
        )
        r = overhead(profile, pairs)
        raw[profile] = r
        sections.append(f"#### Profile {profile}\n\n{overhead_table(r)}\n")
        print("\n" + sections[-1], flush=True)
    if not args.no_scaling:
        s = scaling()
        raw["scaling"] = s
        table, _ = scaling_table(s)
        scaling_plot(
            s, (RESULTS if canonical else (args.out or Path("reports/x")).parent) / "scaling.png"
        )
        sections.append(f"#### Scaling\n\n{table}\n\n![scaling](scaling.png)\n")
        print("\n" + sections[-1], flush=True)
    body = "\n".join(sections)
    if canonical:  # `make bench-pipeline` as it is: the result the README shows
        from bench.report_io import save_result

        # every measurement runs in a child process: this one's imports are not their code
        children = "`adaptflow run` and the plain loop run in child processes"
        out = save_result("pipeline", body, time.perf_counter() - t0, coarse=children)
    else:
        out = args.out or Path("reports") / "bench-pipeline.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(body)
    out.with_suffix(".json").write_text(json.dumps(raw, indent=1))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
