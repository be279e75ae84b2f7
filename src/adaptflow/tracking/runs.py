"""One parent run per pipeline run, one nested run per stage (and per method inside a stage)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import threading
import time
import traceback
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import Metric, RunStatus
from mlflow.tracking import MlflowClient

from adaptflow import interrupt
from adaptflow.retry import per_call

# Curves (metrics with a step) are written in batches, at most every FLUSH_SECONDS per run and
# always when the run ends: one sqlite transaction per epoch cost ~20 ms, a minute over the
# pipeline's ~3,000 tiny epochs. The MLflow UI still sees a live curve, 2 s behind.
FLUSH_SECONDS = 2.0
log = logging.getLogger(__name__)
_pending: dict[str, list[Metric]] = {}
_flushed_at: dict[str, float] = {}

TAG_STAGE = "adaptflow.stage"
TAG_KEY = "adaptflow.cache_key"
TAG_HIT = "adaptflow.cache_hit"
TAG_FROM = "adaptflow.cached_from"
TAG_MISS = "adaptflow.cache_miss_reason"  # a matching cached run existed but was unusable
TAG_DECISION = "adaptflow.model_decision"  # the registry gate's decision (or "not registered")
TAG_REASON = "adaptflow.model_decision_reason"
TAG_MODELS = "adaptflow.models"  # JSON {label: {uri, gate_context, version, decision, reason}}
TAG_OWNER = "adaptflow.owner"  # host:pid:start of the process that opened the run
MANIFEST = "adaptflow/artifacts.json"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, dict)) else v
    return out


def git_commit(root: Path | str = ".") -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# a sweep unit in a Dask worker has no active run to nest under: it names the stage's run here
_PARENT: ContextVar[tuple[str, str, dict] | None] = ContextVar("adaptflow_parent", default=None)


@contextmanager
def parent_scope(run_id: str, experiment_id: str, tags: dict[str, str]) -> Iterator[None]:
    """Runs started here without an active run nest under `run_id` (in `experiment_id`) and
    carry `tags` (e.g. the worker that ran them)."""
    token = _PARENT.set((run_id, experiment_id, dict(tags)))
    try:
        yield
    finally:
        _PARENT.reset(token)


@contextmanager
def run(
    name: str,
    tags: dict[str, str] | None = None,
    parent_run_id: str | None = None,
    experiment_id: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """A run that ends FINISHED, or FAILED with the error as tags (then the error propagates).
    Runs inside a stage ("<stage>/...") get the tags the MLflow UI's compare view groups by
    (`compare_tags`) and every run a one-line description."""
    tags = compare_tags(name, tags or {})
    current = mlflow.active_run()
    if current is None and parent_run_id is None and _PARENT.get() is not None:
        parent_run_id, experiment_id, scope_tags = _PARENT.get()
        tags = scope_tags | tags
    if experiment_id is None and current is not None:
        experiment_id = current.info.experiment_id
    interrupt.check()  # no new run once the process was asked to stop
    active = per_call(mlflow.start_run)(
        run_name=name,
        nested=parent_run_id is not None or mlflow.active_run() is not None,
        parent_run_id=parent_run_id,
        experiment_id=experiment_id,
        tags=tags | {TAG_OWNER: owner()},
    )
    with _lock:
        _open.add(active.info.run_id)
    try:
        yield active
    except BaseException as e:
        try:
            flush_metrics(active.info.run_id)  # the curve up to the failure is kept
        except Exception as flush_error:  # never hide the run's own error behind a logging one
            log.warning("could not write the curve of run %s: %s", active.info.run_id, flush_error)
        # a stop (a signal: ours, Prefect's TerminationSignal, Ctrl-C) is not a failure
        stopped = interrupt.STOP.is_set() or not isinstance(e, Exception)
        error = interrupt.describe(e) if stopped else f"{type(e).__name__}: {e}"
        try:
            set_tags(
                {
                    "adaptflow.error": error[:5000],
                    "adaptflow.traceback": traceback.format_exc()[-5000:],
                }
            )
        except Exception as tag_error:  # the run's own error is the one to raise
            log.warning("could not tag run %s with its error: %s", active.info.run_id, tag_error)
        _end(active.info.run_id, RunStatus.KILLED if stopped else RunStatus.FAILED)
        raise
    else:
        try:
            flush_metrics(active.info.run_id)
        except BaseException as e:  # the run ends, FAILED (KILLED on a stop), never RUNNING
            stopped = interrupt.STOP.is_set() or not isinstance(e, Exception)
            _end(active.info.run_id, RunStatus.KILLED if stopped else RunStatus.FAILED)
            raise
        _end(active.info.run_id, RunStatus.FINISHED)
    finally:
        _flushed_at.pop(active.info.run_id, None)  # an ended run keeps no state here
        with _lock:
            _open.discard(active.info.run_id)


def _end(run_id: str, status: int) -> None:
    """End the active run `run_id` with `status`: the status is written with retries first
    (mlflow.end_run pops the run before writing, so it cannot be retried itself); the run leaves
    MLflow's active-run stack whatever happens (else its parent would end it in its place)."""
    try:
        per_call(MlflowClient().set_terminated)(run_id, RunStatus.to_string(status))
    finally:
        try:
            mlflow.end_run(RunStatus.to_string(status))  # pops the run (writes the same again)
        except Exception as e:  # the status is written above, or its error propagates
            log.warning("run %s left the active-run stack with an error: %s", run_id, e)


# ---------------------------------------------------------------- stopped processes
_open: set[str] = set()  # the runs this process has open (any thread)
_lock = threading.Lock()


def _start_time(pid: int) -> str:
    """The process's start (clock ticks since boot, /proc on Linux; "-" elsewhere): with the
    pid, it tells a live owner from a new process that reuses a dead one's pid."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "-"


_own: tuple[int, str] | None = None  # (pid, tag) of this process (a forked worker: its own)


def owner(pid: int | None = None) -> str:
    """host:pid:start of process `pid` (this one when None); this process's is read once."""
    global _own
    me = os.getpid()
    if pid is not None and pid != me:
        return f"{socket.gethostname()}:{pid}:{_start_time(pid)}"
    if _own is None or _own[0] != me:
        _own = (me, f"{socket.gethostname()}:{me}:{_start_time(me)}")
    return _own[1]


def _owner_alive(tag: str) -> bool | None:
    """Whether the process named by an owner tag still runs; None: not this host's (unknown)."""
    parts = tag.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return None
    pid, start = int(parts[1]), parts[2]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    return start == "-" or _start_time(pid) in (start, "-")


def _mark_killed(client: MlflowClient, run_id: str, why: str) -> None:
    client.set_tag(run_id, "adaptflow.error", why)
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))


def kill_open_runs(reason: str) -> list[str]:
    """End every run this process has open KILLED, with `reason` as its error (the signal
    handler's first act: a SIGKILL that follows finds them ended). A store that is busy (this
    very thread may hold its write lock) stops the loop at once rather than wait out a lock
    timeout per run: the unwinding that follows ends the runs still open."""
    from adaptflow.retry import is_transient

    client = MlflowClient()
    with _lock:
        ids = sorted(_open)
    for run_id in ids:
        try:
            _mark_killed(client, run_id, reason)
        except Exception as e:  # the store itself may be what is failing
            log.warning("could not mark run %s KILLED: %s", run_id, e)
            if is_transient(e):
                break
    return ids


def reap_stale_runs(experiment_ids: list[str]) -> list[str]:
    """End KILLED the RUNNING runs whose process (on this host) is gone: what a SIGKILL, an
    OOM kill or a power cut left behind. A live process's runs (a concurrent pipeline) and
    other hosts' runs are left alone. Each call is retried on a busy store."""
    client = MlflowClient()
    reaped = []
    search = per_call(client.search_runs)
    found = search(experiment_ids, "attributes.status = 'RUNNING'", max_results=10_000)
    for r in found:
        tag = r.data.tags.get(TAG_OWNER)
        if tag is None or _owner_alive(tag) is not False:
            continue
        pid = tag.rsplit(":", 2)[1]
        why = (
            f"its process (pid {pid}) ended without closing it (killed); marked KILLED by the "
            "next pipeline"
        )
        per_call(_mark_killed)(client, r.info.run_id, why)
        reaped.append(r.info.run_id)
    return reaped


# what tells runs of a stage apart, in the order a description names them
DESCRIBED = {
    "adaptflow.method": "method",
    "adaptflow.arch": "arch",
    "adaptflow.backbone": "backbone",
    "adaptflow.pair": "pair",
    "adaptflow.fraction": "label fraction",
    "adaptflow.seed": "seed",
}
NOTE = "mlflow.note.content"  # the run description shown (and editable) in the MLflow UI


def compare_tags(name: str, tags: Mapping[str, str]) -> dict[str, str]:
    """`tags` plus what every run of a stage carries so the compare view works out of the box:
    `adaptflow.stage`, `adaptflow.kind` (method unless given: registered, phase runs say so),
    `adaptflow.method` (an arm is the method of its stage), and a description."""
    out = dict(tags)
    if "/" in name:
        out.setdefault(TAG_STAGE, name.split("/")[0])
        out.setdefault("adaptflow.kind", "method")
        if "adaptflow.arm" in out:
            out.setdefault("adaptflow.method", out["adaptflow.arm"])
    if NOTE not in out:
        said = [f"{label} {out[k]}" for k, label in DESCRIBED.items() if k in out]
        out[NOTE] = f"{name}: " + ", ".join(said) if said else name
    return out


@per_call
def log_params(params: Mapping[str, Any], prefix: str = "") -> None:
    flat = {k: ("null" if v is None else v) for k, v in flatten(params, prefix).items()}
    items = list(flat.items())
    for i in range(0, len(items), 100):  # MLflow's per-call param limit
        mlflow.log_params(dict(items[i : i + 100]))


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log to the active run; values with a `step` (curves) are batched (see FLUSH_SECONDS)."""
    values = {k: float(v) for k, v in metrics.items()}
    active = mlflow.active_run()
    if step is None or active is None:
        per_call(mlflow.log_metrics)(values, step=step)
        return
    run_id = active.info.run_id
    now_ms = int(time.time() * 1000)
    buffer = _pending.setdefault(run_id, [])
    buffer += [Metric(k, v, now_ms, step) for k, v in values.items()]
    last = _flushed_at.get(run_id)  # None: the run's first value goes out at once
    if last is None or time.monotonic() - last >= FLUSH_SECONDS or len(buffer) >= 900:
        flush_metrics(run_id)


@per_call
def flush_metrics(run_id: str | None = None) -> None:
    """Write the batched curve values of `run_id` (of every run when None)."""
    for rid in list(_pending) if run_id is None else [run_id]:
        metrics = _pending.get(rid, [])
        while metrics:  # MLflow's per-batch limit is 1,000; what failed stays pending
            MlflowClient().log_batch(rid, metrics=metrics[:1000])
            del metrics[:1000]
        _pending.pop(rid, None)
        _flushed_at[rid] = time.monotonic()


@per_call
def log_dataset(
    name: str, path: Path, digest: str, x: np.ndarray, y: np.ndarray, context: str
) -> None:
    """The whole split (x, y) as an MLflow dataset input: digest = the prepared file's DVC md5,
    profile = the split's real shapes, schema from its dtype/shape (nothing is copied)."""
    with warnings.catch_warnings():  # mlflow registers two local-file source kinds; both fit
        warnings.simplefilter("ignore", UserWarning)
        ds = mlflow.data.from_numpy(
            x, source=str(Path(path).resolve()), targets=y, name=name, digest=digest
        )
    mlflow.log_input(ds, context=context)


@per_call
def set_tags(tags: Mapping[str, str]) -> None:
    mlflow.set_tags(dict(tags))


def log_figure(fig, path: str) -> None:
    import matplotlib.pyplot as plt

    try:
        per_call(mlflow.log_figure)(fig, path)
    finally:
        plt.close(fig)


@per_call
def log_image_step(image: np.ndarray, key: str, step: int) -> None:
    """One image of a series (the MLflow UI shows it with a step slider), (H, W) in [0, 1].
    Written before this returns (`synchronous=True`): mlflow's default queues it to a thread
    per run, so a killed process loses the images still queued, and at exit each run's thread
    is joined in turn (up to 1 s each: 4-10 s at the end of a default pipeline)."""
    mlflow.log_image(np.clip(image, 0, 1).astype(np.float32), key=key, step=step, synchronous=True)


@per_call
def log_gif(frames: list[np.ndarray], path: str, ms_per_frame: int = 400) -> None:
    """Grayscale frames (H, W) in [0, 1] as an animated GIF artifact at `path`."""
    import tempfile

    from PIL import Image

    images = [Image.fromarray((np.clip(f, 0, 1) * 255).astype(np.uint8)) for f in frames]
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / Path(path).name
        images[0].save(file, save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)
        mlflow.log_artifact(str(file), str(Path(path).parent))


@per_call
def log_text(text: str, path: str) -> None:
    mlflow.log_text(text, path)


def active_run_id() -> str:
    return mlflow.active_run().info.run_id


@per_call
def log_arrays(arrays: Mapping[str, np.ndarray], path: str, run_id: str | None = None) -> None:
    """Arrays as one compressed .npz artifact at `path` (e.g. features/resnet/mnist.npz) of the
    active run, or of `run_id` (e.g. the stage run, from inside one of its nested runs)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / Path(path).name
        np.savez_compressed(file, **arrays)
        MlflowClient().log_artifact(run_id or active_run_id(), str(file), str(Path(path).parent))


def load_arrays(run_id: str, path: str) -> dict[str, np.ndarray] | None:
    """The .npz artifact `path` of run `run_id`, or None when the run has no such artifact."""
    present = {a.path for a in MlflowClient().list_artifacts(run_id, str(Path(path).parent))}
    if path not in present:
        return None
    with np.load(MlflowClient().download_artifacts(run_id, path)) as z:
        return {k: z[k] for k in z.files}


@per_call
def log_text_to(run_id: str, text: str, path: str) -> None:
    """Text artifact on another run (e.g. the pipeline parent) without switching the active run."""
    MlflowClient().log_text(run_id, text, path)


@per_call
def set_model_tags(name: str, version: str | None, decision: str, reason: str) -> None:
    """On the stage run, so a cache hit can report the model and the gate's decision."""
    tags = {"adaptflow.model_name": name, TAG_DECISION: decision, TAG_REASON: reason[:5000]}
    if version is not None:
        tags["adaptflow.model_version"] = version
    mlflow.set_tags(tags)


@per_call
def set_labelled_models(name: str, models: Mapping[str, Any]) -> None:
    """A stage's per-label models (e.g. one per backbone) and their gate decisions, as one tag."""
    body = {k: {**m.__dict__, "reason": (m.reason or "")[:1000]} for k, m in models.items()}
    mlflow.set_tags({"adaptflow.model_name": name, TAG_MODELS: json.dumps(body, sort_keys=True)})


@per_call
def record_artifacts() -> None:
    """Write the active run's artifact list (MANIFEST) so a cache hit can check nothing is gone."""
    client = MlflowClient()
    run_id = mlflow.active_run().info.run_id
    mlflow.log_text(json.dumps(_artifact_files(client, run_id), indent=0), MANIFEST)


def _artifact_files(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for a in client.list_artifacts(run_id, path):
        out.extend(_artifact_files(client, run_id, a.path) if a.is_dir else [a.path])
    return sorted(out)


def cache_broken(source) -> str | None:
    """Why the cached run `source` cannot be served any more (None: intact). Checks the artifact
    manifest written when it was computed, its logged model and its registered version."""
    from adaptflow.tracking.models import model_missing, version_missing

    client = MlflowClient()
    run_id = source.info.run_id
    present = set(_artifact_files(client, run_id))
    if MANIFEST not in present:
        return f"run {run_id} has no artifact manifest ({MANIFEST})"
    listed = json.loads(Path(client.download_artifacts(run_id, MANIFEST)).read_text())
    lost = [p for p in listed if p not in present]
    if lost:
        return f"run {run_id} lost {len(lost)} artifact(s), e.g. {lost[0]}"
    tags = source.data.tags
    if tags.get("adaptflow.model_uri") and (why := model_missing(tags["adaptflow.model_uri"])):
        return why
    if tags.get("adaptflow.model_version") and (
        why := version_missing(tags["adaptflow.model_name"], tags["adaptflow.model_version"])
    ):
        return why
    for label, m in json.loads(tags.get(TAG_MODELS, "{}")).items():
        if why := model_missing(m["uri"]):
            return f"{label}: {why}"
        if m.get("version") and (
            why := version_missing(tags["adaptflow.model_name"], m["version"])
        ):
            return f"{label}: {why}"
    return None


def find_cached(experiment_id: str, stage: str, key: str) -> Any | None:
    """The newest FINISHED, really-computed run of `stage` with this cache key, or None."""
    runs = MlflowClient().search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{TAG_KEY}` = '{key}' and tags.`{TAG_STAGE}` = '{stage}' "
            f"and tags.`{TAG_HIT}` = 'false' and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def replay_cached(source) -> None:
    """Fill the active (cache-hit) run with what the cached run computed: params, final metrics."""
    mlflow.set_tag(TAG_FROM, source.info.run_id)
    log_params(source.data.params)
    if source.data.metrics:
        log_metrics(source.data.metrics)
    for k, v in source.data.tags.items():
        if k.startswith("adaptflow.model"):
            mlflow.set_tag(k, v)
