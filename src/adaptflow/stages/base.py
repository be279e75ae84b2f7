"""Running one stage: data check, cache lookup, the nested MLflow run, the stage's own work.

Cache key = everything that changes a stage's results: its params (minus DISPLAY_KNOBS), the
input dataset digests (DVC md5), seed, device type (a CUDA/AMP result is not a CPU result), the
versions of the numeric libraries (LIBRARIES), the code version (hash of the adaptflow source),
`registry_prefix` (the name the model is reported under) and the keys of the stages it depends
on. A hit re-uses the finished run only if its artifacts, logged model and registered version
still exist (else it recomputes and says why in `adaptflow.cache_miss_reason`): a new nested run
records `adaptflow.cached_from` and its params/metrics, and no training happens.

After `run()` returns and the artifact manifest is written, the stage's model goes through the
registry gate (tracking.models) as the run's last step, the `champion` alias last of all: a
non-finite or missing gate or headline metric is never registered. A cache hit reports whether
its version holds `champion` now, not the decision made when it was registered.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaptflow.config import Params
from adaptflow.data import DataError, Prepared, load_prepared
from adaptflow.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gate:
    """How a stage's registered model earns `champion`: `metric` (a key of the outcome's metrics,
    measured on the registered model itself, never on test data) and its direction. A stage that
    registers one model per label (e.g. per backbone) writes `{label}` in the metric key; each
    label's version competes for its own alias `champion-<label>`."""

    metric: str
    higher_is_better: bool

    def metric_for(self, label: str) -> str:
        return self.metric.format(label=label) if label else self.metric


@dataclass(frozen=True)
class StageSpec:
    name: str
    datasets: Callable[[Params], list[str]]
    run: Callable[[Params, StageContext, dict[str, Prepared]], StageOutcome]
    depends_on: tuple[str, ...] = ()
    headline: tuple[str, ...] = ()  # metric keys the CLI summary shows
    selection: str = ""  # how models are selected (logged on every run: the protocol matters)
    gate: Gate | None = None  # None: the stage registers no model
    # headline keys that may legitimately be absent (e.g. a method left out of the config);
    # any other headline key, and the gate metric, must be present AND finite to register
    optional_metrics: tuple[str, ...] = ()
    # params sections besides its own that change its results (e.g. a sweep shared by stages):
    # in the cache key and logged as params
    shared_params: tuple[str, ...] = ()
    # what else changes its results and is not a param (e.g. the bytes of a weights file a
    # param names): a JSON-able dict entering the cache key
    fingerprint: Callable[[Params], dict[str, str]] | None = None
    label_kind: str = "label"  # what a model label names (e.g. "backbone"): a version tag
    # True: a dataset `prepare` skipped (optional source, file absent) is left out of run()'s
    # data and the stage says why for what needed it; False: it is an error naming the fix
    optional_inputs: bool = False


@dataclass(frozen=True)
class StageContext:
    root: Path
    experiment_id: str
    device: torch.device
    parent_run_id: str | None = None
    progress: bool = True
    force: bool = False
    upstream_keys: dict[str, str] = field(default_factory=dict)
    # what the pipeline passes along from the stages this one depends on: {stage: {"run_id":
    # the run holding its artifacts, "models": {label: model URI}}}. A stage run alone gets its
    # upstream models from the registry instead (`execute` fills this in; see resolve_upstream).
    upstream: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class LabelledModel:
    """One of several models a stage registers (e.g. one per backbone), gated under its label."""

    uri: str
    gate_context: dict[str, str]
    tags: dict[str, str] = field(default_factory=dict)  # extra version tags (e.g. the arm)
    version: str | None = None
    decision: str | None = None
    reason: str | None = None


@dataclass
class StageOutcome:
    stage: str = ""
    run_id: str = ""
    cache_key: str = ""
    cache_hit: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    model_name: str | None = None
    model_version: str | None = None
    # set by the stage's run(): the logged (not yet registered) model and what the gate compares.
    # execute() registers it only after run() finished all its work.
    model_uri: str | None = None
    gate_context: dict[str, str] = field(default_factory=dict)  # digest, input shape, split
    model_decision: str | None = None  # champion | challenger | not registered (set by execute)
    model_decision_reason: str | None = None
    # stages registering one model per label (e.g. per backbone) fill this instead of model_uri
    models: dict[str, LabelledModel] = field(default_factory=dict)
    artifact_run_id: str = ""  # the run holding the artifacts (the cached run on a cache hit)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["models"] = {k: dict(v.__dict__) for k, v in self.models.items()}
        return out

    def model_uris(self) -> dict[str, str]:
        """{label: logged model URI}: what a downstream stage loads ("" = the single model)."""
        single = {"": self.model_uri} if self.model_uri else {}
        return single | {k: m.uri for k, m in self.models.items()}


STAGES: Registry[StageSpec] = Registry("stage")

Claim = tuple[str, str, str]  # (the seed's claim, what was measured, verdict)
PAIRED = "measured (mean ± 95 % CI of the paired difference)"


def claims_table(claims: list[Claim], measured: str = "measured") -> list[str]:
    """Markdown lines of the verdict table every stage's report ends with."""
    return [
        "## The seed's claims",
        "",
        f"| claim | {measured} | verdict |",
        "|---|---|---|",
        *[f"| {c} | {m} | {v} |" for c, m, v in claims],
    ]


def log_claims(stage: str, claims: list[Claim], measured: str = "measured") -> None:
    """`<stage>/claims.json` on the active run: the verdict table as data (what `adaptflow
    compare` reads; the Markdown report is for people)."""
    from adaptflow.tracking import runs

    rows = [{"claim": c, "measured": m, "verdict": v} for c, m, v in claims]
    body = {"stage": stage, "measured": measured, "claims": rows}
    runs.log_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n", f"{stage}/claims.json")


def split_train_val(n: int, val_fraction: float, max_train: int | None, seed: int):
    """Indices of a seeded train/validation split of n examples, train capped at max_train."""
    idx = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    val, train = idx[:n_val], idx[n_val:]
    if max_train is not None:
        train = train[:max_train]
        val = val[: max(1, int(round(len(train) * val_fraction)))]
    return train, val


@dataclass(frozen=True)
class HeldOutSplit:
    """A stage's arrays: training and validation parts of the training split (seeded,
    `split_train_val`), the (capped) test split, the class count and the validation positions
    (the gate's split fingerprint)."""

    x_tr: np.ndarray
    y_tr: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_te: np.ndarray
    y_te: np.ndarray
    n_classes: int
    val_idx: np.ndarray

    @classmethod
    def build(cls, split, cfg, seed: int) -> HeldOutSplit:
        """From a prepared split and a stage config with val_fraction, max_train, max_test."""
        tr, val = split_train_val(len(split.x_train), cfg.val_fraction, cfg.max_train, seed)
        n_te = test_size(split, cfg.max_test)
        return cls(
            split.x_train[tr],
            split.y_train[tr],
            split.x_train[val],
            split.y_train[val],
            split.x_test[:n_te],
            split.y_test[:n_te],
            split.num_classes,
            val,
        )


def test_size(split, max_test: int | None) -> int:
    """How many test examples a stage scores: all, or the first `max_test` (smoke runs)."""
    return len(split.x_test) if max_test is None else min(max_test, len(split.x_test))


def split_fingerprint(idx: np.ndarray) -> str:
    """Short hash of a set of indices (order-free): the gate only compares versions measured on
    the same validation split."""
    return hashlib.sha256(np.sort(idx).astype(np.int64).tobytes()).hexdigest()[:12]


# Params that change no computed number, only what is drawn or printed: kept out of the key.
# `gate_margin` is one too: it decides nothing but the registry alias, once, when a version is
# registered (its value is kept in the version's `gate.margin` tag); a cache hit registers
# nothing, so re-computing a stage only because the margin changed would buy nothing.
DISPLAY_KNOBS = frozenset({"log_every", "tsne_points", "gate_margin"})
LIBRARIES = ("torch", "numpy", "scikit-learn", "scipy", "mlflow")  # their versions change results


def code_version(pkg: Path | None = None) -> str:
    """Hash of every .py file of the adaptflow package (any code change invalidates)."""
    if pkg is None:
        import adaptflow

        pkg = Path(adaptflow.__file__).parent
    h = hashlib.sha256()
    for path in sorted(pkg.rglob("*.py")):
        h.update(str(path.relative_to(pkg)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def library_versions() -> dict[str, str]:
    return {p: md.version(p) for p in LIBRARIES}


def cache_key(
    stage: str,
    params: Params,
    digests: dict[str, str],
    upstream: dict[str, str],
    device: torch.device | str,
) -> str:
    stage_params = params.stage(stage).model_dump(mode="json")
    spec = STAGES.get(stage) if stage in STAGES else None
    for section in spec.shared_params if spec else ():
        stage_params[f"shared:{section}"] = shared_section(params, section)
    payload = {
        "stage": stage,
        "params": {k: v for k, v in stage_params.items() if k not in DISPLAY_KNOBS},
        "seed": params.seed,
        "data": digests,
        "device": torch.device(device).type,  # cuda:0 and cuda:1 compute the same
        "libraries": library_versions(),
        "code": code_version(),
        "registry_prefix": params.registry_prefix,
        "upstream": upstream,
        "inputs": spec.fingerprint(params) if spec and spec.fingerprint else {},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def shared_section(params: Params, dotted: str) -> Any:
    """The JSON of a params section (or a key of one: "transfer.backbones") a stage shares."""
    node: Any = params
    for key in dotted.split("."):
        node = getattr(node, key)
    if isinstance(node, dict):
        return {
            k: v.model_dump(mode="json") if hasattr(v, "model_dump") else v for k, v in node.items()
        }
    return node.model_dump(mode="json") if hasattr(node, "model_dump") else node


def load_inputs(params: Params, spec: StageSpec) -> dict[str, Prepared]:
    """The stage's prepared datasets; an optional source skipped by `prepare` (its file absent)
    is left out, and the stage says why for whatever needed it (e.g. a `da` pair)."""
    from adaptflow.data import SkippedSource

    out = {}
    for name in spec.datasets(params):
        try:
            out[name] = load_prepared(params.data.prepared_dir, name)
        except SkippedSource as e:
            if not spec.optional_inputs:
                raise DataError(
                    f"stage {spec.name} needs data source {name!r}, which prepare skipped: "
                    f"{e.reason}; provide the file or point the stage at another source"
                ) from None
            log.warning("stage %s: dataset %s skipped: %s", spec.name, name, e.reason)
    return out


def resolve_upstream(spec: StageSpec, params: Params, ctx: StageContext) -> dict[str, dict]:
    """{dependency: {"key", "run_id", "models"}} for each stage `spec` depends on: what the
    pipeline passed along, else (a stage run alone) the dependency's champions in the registry
    (`<prefix>-<dep>@champion` and `@champion-<label>`): never a path guessed on disk. "key"
    enters the cache key, so a moved champion recomputes the stage."""
    from adaptflow.tracking.models import registered_champions

    out = {}
    for dep in spec.depends_on:
        if dep in ctx.upstream or dep in ctx.upstream_keys:
            ref = dict(ctx.upstream.get(dep, {}))
            ref.setdefault("models", {})
            ref.setdefault("run_id", "")
            ref["key"] = ctx.upstream_keys.get(dep, ref.get("key", ""))
            out[dep] = ref
            continue
        name = params.model_name(dep)
        found = registered_champions(name)
        out[dep] = {
            "run_id": "",
            "models": {label: uri for label, (_, uri) in found.items()},
            "key": "registry:" + ",".join(f"{lab or '-'}=v{v}" for lab, (v, _) in found.items()),
            "source": f"registry {name}",
        }
    return out


def execute(name: str, params: Params, ctx: StageContext) -> StageOutcome:
    from adaptflow.tracking import runs

    spec = STAGES.get(name)
    data = load_inputs(params, spec)
    digests = {k: v.digest for k, v in data.items()}
    upstream = resolve_upstream(spec, params, ctx)
    ctx = replace(ctx, upstream=upstream)
    key = cache_key(name, params, digests, {d: u["key"] for d, u in upstream.items()}, ctx.device)
    cached = None if ctx.force else runs.find_cached(ctx.experiment_id, name, key)
    miss_reason = None if cached is None else runs.cache_broken(cached)
    if miss_reason is not None:
        log.warning("stage %s: cached run unusable, recomputing: %s", name, miss_reason)
        cached = None
    tags = {
        runs.TAG_STAGE: name,
        "adaptflow.kind": "stage",
        runs.NOTE: f"stage {name} ({spec.selection})",
        runs.TAG_KEY: key,
        runs.TAG_HIT: str(cached is not None).lower(),
        "adaptflow.seed": str(params.seed),
        "adaptflow.device": str(ctx.device),
        "adaptflow.profile": params.profile,
        "adaptflow.git_commit": runs.git_commit(ctx.root),
        "adaptflow.selection": spec.selection,
        **{f"adaptflow.upstream.{d}": u["key"][:500] for d, u in upstream.items()},
    }
    if miss_reason is not None:
        tags[runs.TAG_MISS] = miss_reason[:5000]
    with runs.run(
        name, tags=tags, parent_run_id=ctx.parent_run_id, experiment_id=ctx.experiment_id
    ) as active:
        if cached is not None:
            log.info("stage %s: cache hit (run %s), nothing to compute", name, cached.info.run_id)
            runs.replay_cached(cached)
            t = cached.data.tags
            hit = StageOutcome(
                name,
                active.info.run_id,
                key,
                True,
                dict(cached.data.metrics),
                t.get("adaptflow.model_name"),
                t.get("adaptflow.model_version"),
                t.get("adaptflow.model_uri"),
                model_decision=t.get(runs.TAG_DECISION),
                model_decision_reason=t.get(runs.TAG_REASON),
                models={
                    k: LabelledModel(**v)
                    for k, v in json.loads(t.get(runs.TAG_MODELS, "{}")).items()
                },
                artifact_run_id=cached.info.run_id,
            )
            _refresh_decision(hit)
            return hit
        runs.log_params(params.stage(name).model_dump(mode="json"), prefix=name)
        for section in spec.shared_params:
            runs.log_params(shared_section(params, section), prefix=section)
        runs.log_params({"seed": params.seed, "device": str(ctx.device), "profile": params.profile})
        for ds_name, prepared in data.items():
            runs.log_dataset(
                ds_name,
                prepared.path,
                prepared.digest,
                prepared.split.x_train,
                prepared.split.y_train,
                context="training",
            )
        outcome = spec.run(params, ctx, data)
        outcome.stage, outcome.run_id, outcome.cache_key = name, active.info.run_id, key
        outcome.artifact_run_id = active.info.run_id
        runs.record_artifacts()
        runs.flush_metrics(active.info.run_id)  # written before any alias moves
        # the last step: after it only the run's FINISHED status is written (with retries)
        _gate(spec, params, outcome)
        return outcome


def _refresh_decision(hit: StageOutcome) -> None:
    """A cache hit reports the registry as it is NOW, not the decision made when the cached run
    registered its version (the alias may have moved to a later version since)."""
    from adaptflow.tracking import runs

    if hit.model_name and hit.model_version:
        hit.model_decision, hit.model_decision_reason = _decision_now(
            hit.model_name, "", hit.model_version, hit.model_decision, hit.model_decision_reason
        )
        runs.set_model_tags(
            hit.model_name, hit.model_version, hit.model_decision, hit.model_decision_reason
        )
    for label, m in hit.models.items():
        if hit.model_name and m.version:
            m.decision, m.reason = _decision_now(
                hit.model_name, label, m.version, m.decision, m.reason
            )
    if hit.models:
        runs.set_labelled_models(hit.model_name or "", hit.models)


def _decision_now(
    name: str, label: str, version: str, decision: str | None, reason: str | None
) -> tuple[str | None, str | None]:
    from adaptflow.tracking.models import CHALLENGER, CHAMPION, alias_for, champion

    current = champion(name, alias=alias_for(label))
    now = None if current is None else str(current.version)
    if now == version:
        if decision != CHAMPION:
            return CHAMPION, f"champion now (was {reason})"
        return decision, reason
    if decision == CHAMPION or now is not None:
        moved = "no champion now" if now is None else f"champion moved to v{now}"
        return (
            f"{CHALLENGER} ({moved})",
            f"cache hit of v{version}, {moved}; at registration: {reason}",
        )
    return decision, reason


def _gate(spec: StageSpec, params: Params, outcome: StageOutcome) -> None:
    """Register the stage's logged model(s) through the registry gate, once run() has finished.

    A non-finite gate value or headline metric (a diverged run) is never registered. A stage
    without a gate registers nothing (its logged model stays a plain run artifact). A stage with
    labelled models registers each as a version of the same name, gated on `metric_for(label)`
    against the version holding `champion-<label>`; the aliases are set last, together.
    """
    from adaptflow.tracking.store import store_lock

    if not outcome.model_uri and not outcome.models:
        return
    if spec.gate is None:
        log.warning("stage %s logged a model but declares no gate: not registered", spec.name)
        return
    if "test" in spec.gate.metric.split("/")[-1]:  # selection on test would leak into verdicts
        raise ValueError(f"stage {spec.name}: gate metric {spec.gate.metric!r} is a test metric")
    outcome.model_name = outcome.model_name or params.model_name(spec.name)
    required = [k for k in spec.headline if k not in spec.optional_metrics]
    bad = _bad_metrics(outcome, required)
    single = [("", outcome.model_uri, outcome.gate_context, {})] if outcome.model_uri else []
    candidates = single + [
        (label, m.uri, m.gate_context, {spec.label_kind: label, **m.tags})
        for label, m in outcome.models.items()
    ]
    # two pipelines on one local store gate one model at a time: read the champion, decide,
    # register, move the alias (a tracking server: re-checked before the alias moves)
    with store_lock(f"gate-{outcome.model_name}"):
        _gate_locked(spec, params, outcome, candidates, bad)


def _gate_locked(spec: StageSpec, params: Params, outcome: StageOutcome, candidates, bad) -> None:
    from adaptflow.tracking import runs
    from adaptflow.tracking.models import (
        CHAMPION,
        NOT_REGISTERED,
        abort_version,
        alias_for,
        champion,
        recheck,
        restore_alias,
        set_champion,
    )

    registered: list[tuple[str, str, str, str | None]] = []  # (label, version, decision, holder)
    moved: list[tuple[str, str | None]] = []  # (alias, the version that held it before)
    try:
        for label, uri, context, version_tags in candidates:
            metric = spec.gate.metric_for(label)
            why = bad or _bad_metrics(outcome, [metric])
            if why:
                version = None
                decision, reason = NOT_REGISTERED, f"non-finite or missing metrics {why}"
                log.warning("stage %s: %s, model %r not registered", spec.name, reason, label)
            else:
                version, decision, reason, holder = _register(
                    spec, params, outcome, label, metric, uri, context, version_tags
                )
                registered.append((label, version, decision, holder))
                log.info(
                    "stage %s: %s v%s (%s) is %s: %s",
                    spec.name,
                    outcome.model_name,
                    version,
                    label or "the stage model",
                    decision,
                    reason,
                )
            if label:
                outcome.models[label].version = version
            else:
                outcome.model_version = version
            _set_decision(outcome, runs, label, decision, reason)
        if outcome.models:
            runs.set_labelled_models(outcome.model_name, outcome.models)
        for label, version, decision, holder in registered:  # the aliases last
            if decision != CHAMPION:
                continue
            alias = alias_for(label)
            # read again right before the move: with a tracking server (no shared lock, and
            # MLflow has no compare-and-set for aliases: a short window remains) another client
            # may have moved it since; the version must still win against that one (decided
            # again), and a restore puts back that one
            held = champion(outcome.model_name, alias=alias)
            now = None if held is None else str(held.version)
            if now != holder:
                gate = recheck(outcome.model_name, version, held)
                _set_decision(outcome, runs, label, gate.decision, gate.reason)
                if outcome.models:
                    runs.set_labelled_models(outcome.model_name, outcome.models)
                if gate.decision != CHAMPION:
                    continue
            moved.append((alias, now))
            set_champion(outcome.model_name, version, alias=alias)
    except BaseException as e:
        # the run will end FAILED: its versions must not count as gated results later (the
        # no-alias comparison only reads champion/challenger decisions), and an alias already
        # moved to one of them goes back to the version that held it
        for alias, previous in moved:
            restore_alias(outcome.model_name, alias, previous)
        for _, version, _, _ in registered:
            abort_version(outcome.model_name, version, f"{type(e).__name__}: {e}")
        raise


def _set_decision(outcome: StageOutcome, runs, label: str, decision: str, reason: str) -> None:
    """The gate's decision for the model `label` ("" = the stage model) on the outcome (and on
    the stage run's tags for the stage model)."""
    if label:
        m = outcome.models[label]
        m.decision, m.reason = decision, reason
    else:
        outcome.model_decision, outcome.model_decision_reason = decision, reason
        runs.set_model_tags(outcome.model_name, outcome.model_version, decision, reason)


def _bad_metrics(outcome: StageOutcome, keys: list[str]) -> dict[str, Any]:
    """Missing or non-finite metrics among `keys` (a summary may drop a non-finite value)."""
    return {
        k: outcome.metrics.get(k, "missing")
        for k in keys
        if k not in outcome.metrics or not math.isfinite(outcome.metrics[k])
    }


def _register(
    spec, params, outcome, label, metric, uri, context, version_tags
) -> tuple[str, str, str]:
    from adaptflow.tracking.models import alias_for, register_gated

    reg = register_gated(
        uri,
        outcome.model_name,
        metric,
        float(outcome.metrics[metric]),
        spec.gate.higher_is_better,
        float(getattr(params.stage(spec.name), "gate_margin", 0.0)),
        context,
        alias=alias_for(label),
        labels=version_tags,
    )
    return reg.version, reg.decision, reg.reason, reg.alias_holder
