"""Running one stage: data check, cache lookup, the nested MLflow run, the stage's own work.

Cache key = stage params + input dataset digests (DVC md5) + seed + code version (hash of the
adaptflow source) + the keys of the stages it depends on. A hit re-uses the finished run: a new
nested run records `adaptflow.cached_from` and its params/metrics, and no training happens.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaptflow.config import Params
from adaptflow.data import Prepared, load_prepared
from adaptflow.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gate:
    """How a stage's registered model earns `champion`: `metric` (a key of the outcome's metrics,
    measured on the registered model itself, never on test data) and its direction."""

    metric: str
    higher_is_better: bool


@dataclass(frozen=True)
class StageSpec:
    name: str
    datasets: Callable[[Params], list[str]]
    run: Callable[[Params, StageContext, dict[str, Prepared]], StageOutcome]
    depends_on: tuple[str, ...] = ()
    headline: tuple[str, ...] = ()  # metric keys the CLI summary shows
    selection: str = ""  # how models are selected (logged on every run: the protocol matters)
    gate: Gate | None = None  # None: the stage registers no model


@dataclass(frozen=True)
class StageContext:
    root: Path
    experiment_id: str
    device: torch.device
    parent_run_id: str | None = None
    progress: bool = True
    force: bool = False
    upstream_keys: dict[str, str] = field(default_factory=dict)


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

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


STAGES: Registry[StageSpec] = Registry("stage")

Claim = tuple[str, str, str]  # (the seed's claim, what was measured, verdict)


def verdict(ok: bool) -> str:
    return "holds" if ok else "does not hold"


def claims_table(claims: list[Claim], measured: str = "measured") -> list[str]:
    """Markdown lines of the verdict table every stage's report ends with."""
    return [
        "## The seed's claims",
        "",
        f"| claim | {measured} | verdict |",
        "|---|---|---|",
        *[f"| {c} | {m} | {v} |" for c, m, v in claims],
    ]


def split_train_val(n: int, val_fraction: float, max_train: int | None, seed: int):
    """Indices of a seeded train/validation split of n examples, train capped at max_train."""
    idx = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    val, train = idx[:n_val], idx[n_val:]
    if max_train is not None:
        train = train[:max_train]
        val = val[: max(1, int(round(len(train) * val_fraction)))]
    return train, val


def code_version() -> str:
    """Hash of every .py file of the installed adaptflow package (any code change invalidates)."""
    import adaptflow

    pkg = Path(adaptflow.__file__).parent
    h = hashlib.sha256()
    for path in sorted(pkg.rglob("*.py")):
        h.update(str(path.relative_to(pkg)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def cache_key(stage: str, params: Params, digests: dict[str, str], upstream: dict[str, str]) -> str:
    payload = {
        "stage": stage,
        "params": params.stage(stage).model_dump(mode="json"),
        "seed": params.seed,
        "data": digests,
        "code": code_version(),
        "upstream": upstream,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def load_inputs(params: Params, spec: StageSpec) -> dict[str, Prepared]:
    return {name: load_prepared(params.data.prepared_dir, name) for name in spec.datasets(params)}


def execute(name: str, params: Params, ctx: StageContext) -> StageOutcome:
    from adaptflow.tracking import runs

    spec = STAGES.get(name)
    data = load_inputs(params, spec)
    key = cache_key(name, params, {k: v.digest for k, v in data.items()}, ctx.upstream_keys)
    cached = None if ctx.force else runs.find_cached(ctx.experiment_id, name, key)
    tags = {
        runs.TAG_STAGE: name,
        runs.TAG_KEY: key,
        runs.TAG_HIT: str(cached is not None).lower(),
        "adaptflow.seed": str(params.seed),
        "adaptflow.device": str(ctx.device),
        "adaptflow.profile": params.profile,
        "adaptflow.git_commit": runs.git_commit(ctx.root),
        "adaptflow.selection": spec.selection,
    }
    with runs.run(
        name, tags=tags, parent_run_id=ctx.parent_run_id, experiment_id=ctx.experiment_id
    ) as active:
        if cached is not None:
            log.info("stage %s: cache hit (run %s), nothing to compute", name, cached.info.run_id)
            runs.replay_cached(cached)
            t = cached.data.tags
            return StageOutcome(
                name,
                active.info.run_id,
                key,
                True,
                dict(cached.data.metrics),
                t.get("adaptflow.model_name"),
                t.get("adaptflow.model_version"),
            )
        runs.log_params(params.stage(name).model_dump(mode="json"), prefix=name)
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
        if outcome.model_uri and outcome.model_name:  # interim: registered, gated later
            from adaptflow.tracking.models import register

            outcome.model_version = register(outcome.model_uri, outcome.model_name)
        if outcome.model_version:  # on the stage run too, so a cache hit can report the model
            runs.set_model_tags(outcome.model_name, outcome.model_version)
        return outcome
