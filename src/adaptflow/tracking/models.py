"""Model logging and the gated registry: `<prefix>-<stage>` versions, `champion` earned by a gate.

A new version becomes `champion` only when there is no champion yet, or when it beats the
champion's gate value by more than the stage's margin, in the gate's direction, on the same
dataset digest, input shape, validation split and model interface (the champion's `gate.*`
tags). With no alias (never set, or removed), the best comparable gated version takes the
champion's place in that comparison. Otherwise it is a `challenger`, and the tags say why. Every
decision is written as `gate.*` tags on the version.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.protos.databricks_pb2 import NOT_FOUND, RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient

from adaptflow.retry import per_call

CHAMPION = "champion"
CHALLENGER = "challenger"
NOT_REGISTERED = "not registered"
# What loading + predicting a logged adaptflow model imports beyond mlflow itself (mlflow pins its
# own version in requirements.txt): torch, numpy, pydantic (method configs), rich (the Trainer's
# progress bars, imported by every method module), scikit-learn (the PCA method and metrics
# modules), timm (the transfer stages' backbones). tests/tracking/test_models.py loads models in
# a fresh process and fails when something they import is neither listed here nor pulled in.
RUNTIME_PACKAGES = ("torch", "numpy", "pydantic", "rich", "scikit-learn", "timm")
CONTEXT_KEYS = ("dataset_digest", "input_shape", "val_split")  # required; must match to compare
# the network interface the stage declares (e.g. "ae-mlp-code32"): compared when present; a
# version without it (older versions, or a stage that does not declare it) is not comparable
MODEL_KEY = "model"
_MISSING = (ErrorCode.Name(RESOURCE_DOES_NOT_EXIST), ErrorCode.Name(NOT_FOUND))


def pip_requirements() -> list[str]:
    return [f"{p}=={md.version(p)}" for p in RUNTIME_PACKAGES]


def log_torch_model(model: torch.nn.Module, x_example: np.ndarray) -> str:
    """Log a torch module (pickle format + the adaptflow source as code_paths) and its state_dict.

    pickle, not pt2: pt2 loads back as a traced GraphModule, losing encode()/decode methods that
    later stages use. The state_dict beside it can be read with torch.load(weights_only=True).
    Nothing is registered here: the stage's execute() registers the model once the whole stage
    has finished (a failed stage leaves no version behind). Returns the model URI.
    """
    model = model.cpu().eval()
    with torch.no_grad():
        y_example = model(torch.from_numpy(x_example)).numpy()
    pickle_warning = logging.getLogger("mlflow.pytorch")  # the choice is deliberate (see above)
    level = pickle_warning.level
    pickle_warning.setLevel(logging.ERROR)
    try:
        info = _log(model, x_example, y_example)
    finally:
        pickle_warning.setLevel(level)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state_dict.pt"
        torch.save(model.state_dict(), path)
        per_call(mlflow.log_artifact)(str(path), "checkpoint")
    per_call(mlflow.set_tag)("adaptflow.model_uri", info.model_uri)
    return info.model_uri


@per_call  # a retry after a refused write may leave an unused logged model (PENDING, in no version)
def _log(model, x_example, y_example):
    import adaptflow

    return mlflow.pytorch.log_model(
        model,
        name="model",
        serialization_format="pickle",
        pip_requirements=pip_requirements(),
        code_paths=[str(Path(adaptflow.__file__).parent)],
        signature=infer_signature(x_example, y_example),
    )


def is_missing(e: MlflowException) -> bool:
    """True for "this resource does not exist" (404-type) errors only: a permission error, a
    server that is down or a bad request is NOT "missing" and must propagate."""
    return e.error_code in _MISSING


def alias_for(label: str) -> str:
    """The alias a version competes for: `champion`, or `champion-<label>` for a stage that
    registers one model per label (e.g. per backbone) under one name."""
    return f"{CHAMPION}-{label}" if label else CHAMPION


def registered_champions(name: str, client: MlflowClient | None = None) -> dict[str, tuple]:
    """{label: (version, "models:/<name>/<version>")} of every champion alias of `name` (label ""
    for `champion`, else the part after `champion-`); {} when `name` is not registered."""
    client = client or MlflowClient()
    try:
        model = client.get_registered_model(name)
    except MlflowException as e:
        if is_missing(e):
            return {}
        raise
    out = {}
    for alias, version in sorted(model.aliases.items()):
        if alias == CHAMPION or alias.startswith(f"{CHAMPION}-"):
            label = alias.removeprefix(CHAMPION).removeprefix("-")
            out[label] = (str(version), f"models:/{name}/{version}")
    return out


def champion(name: str, client: MlflowClient | None = None, alias: str = CHAMPION):
    """The ModelVersion holding `alias` (`champion`) of `name`, or None when there is none yet.

    mlflow 3.17 (sqlalchemy store, and the REST store relaying the server's error code): a
    registered model that does not exist raises RESOURCE_DOES_NOT_EXIST, but a missing *alias*
    raises INVALID_PARAMETER_VALUE, the same code as a malformed name. So the alias is read from
    the registered model's `aliases` instead of catching errors of get_model_version_by_alias;
    only "registered model does not exist" means "no champion yet", every other error propagates.
    """
    client = client or MlflowClient()
    try:
        model = per_call(client.get_registered_model)(name)  # reads: safe to repeat
    except MlflowException as e:
        if is_missing(e):
            return None
        raise
    version = model.aliases.get(alias)
    return None if version is None else per_call(client.get_model_version)(name, str(version))


@dataclass(frozen=True)
class GateDecision:
    decision: str  # CHAMPION | CHALLENGER
    reason: str
    champion_version: str | None = None
    champion_value: float | None = None


def decide(
    metric: str,
    value: float,
    higher_is_better: bool,
    margin: float,
    context: Mapping[str, str],
    current: tuple[str, Mapping[str, str]] | None,
) -> GateDecision:
    """The gate: `current` is (version, tags) of the champion, or None when there is none."""
    if current is None:
        return GateDecision(CHAMPION, "no champion and no comparable gated version yet")
    version, tags = current
    if "gate.value" not in tags:  # registered before the gate existed: it never earned the alias
        return GateDecision(
            CHAMPION, f"champion v{version} predates the gate (no gate tags)", version
        )
    champ_value = float(tags["gate.value"])
    if tags.get("gate.metric") != metric:
        return GateDecision(
            CHALLENGER,
            f"not comparable: champion v{version} was gated on {tags.get('gate.metric')!r}, "
            f"this version on {metric!r}",
            version,
            champ_value,
        )
    theirs, ours = tags.get(f"gate.{MODEL_KEY}"), context.get(MODEL_KEY)
    if theirs is None or ours is None:
        return GateDecision(
            CHALLENGER,
            f"not comparable: model interface unknown (v{version}: {theirs}, this: {ours})",
            version,
            champ_value,
        )
    for key in (*CONTEXT_KEYS, MODEL_KEY):
        theirs, ours = tags.get(f"gate.{key}"), context.get(key)
        if theirs != ours:
            return GateDecision(
                CHALLENGER,
                f"not comparable: different {key} (champion v{version}: {theirs}, this: {ours})",
                version,
                champ_value,
            )
    gain = value - champ_value if higher_is_better else champ_value - value
    where = f"{metric} {value:.6g} vs champion v{version} {champ_value:.6g}"
    direction = "higher" if higher_is_better else "lower"
    if gain > margin:
        return GateDecision(
            CHAMPION,
            f"beats champion: {where} ({direction} is better, margin {margin:g})",
            version,
            champ_value,
        )
    return GateDecision(
        CHALLENGER,
        f"worse or not better by more than the margin {margin:g}: {where} ({direction} is better)",
        version,
        champ_value,
    )


@dataclass(frozen=True)
class Registration:
    version: str
    decision: str
    reason: str
    alias_holder: str | None = None  # the version that held the alias when the gate decided


def register_gated(
    model_uri: str,
    name: str,
    metric: str,
    value: float,
    higher_is_better: bool,
    margin: float,
    context: Mapping[str, str],
    alias: str = CHAMPION,
    labels: Mapping[str, str] | None = None,
) -> Registration:
    """Register `model_uri` as a new version of `name` and let the gate decide its alias.

    The champion is read BEFORE registering, so a registry error (permissions, server down)
    leaves no undecided version behind. `gate.decision` is the last tag written: a version
    without it was interrupted mid-way and holds no decision. The alias is NOT set here: the
    caller calls set_champion as its last step, once everything else of its run succeeded.
    """
    if not math.isfinite(value):
        raise ValueError(f"gate value {metric}={value} is not finite: never registered")
    missing = [k for k in CONTEXT_KEYS if not context.get(k)]
    if missing:
        raise ValueError(f"gate context lacks {missing}: the version could never be compared")
    client = MlflowClient()
    current = champion(name, client, alias)
    holder = None if current is None else str(current.version)
    via = ""
    if current is None:  # no alias (yet, or removed): the best comparable gated version rules
        current = best_gated(name, metric, higher_is_better, context, client)
        if current is not None:
            via = "no champion alias; compared with the best comparable gated version: "
    gate = decide(
        metric,
        value,
        higher_is_better,
        margin,
        context,
        None if current is None else (str(current.version), current.tags),
    )
    version = _register_version(client, model_uri, name)
    tags = {
        "gate.metric": metric,
        "gate.value": repr(float(value)),
        "gate.direction": "higher" if higher_is_better else "lower",
        "gate.margin": repr(float(margin)),
        "gate.champion_version": gate.champion_version or "none",
        "gate.champion_value": "none" if gate.champion_value is None else repr(gate.champion_value),
        "gate.reason": via + gate.reason,
        **{f"gate.{k}": str(context[k]) for k in (*CONTEXT_KEYS, MODEL_KEY) if k in context},
        "gate.alias": alias,
        **dict(labels or {}),  # e.g. {"backbone": "vit"}: what the version is, for filtering
    }
    tags["gate.decision"] = gate.decision  # a version without it holds no decision
    for k, v in tags.items():
        per_call(client.set_model_version_tag)(name, version, k, v)
    return Registration(version, gate.decision, tags["gate.reason"], holder)


@per_call
def _registered_already(client: MlflowClient, model_uri: str, name: str) -> str | None:
    """The version of `name` registered from `model_uri`, if a refused call made one."""
    versions = client.search_model_versions(f"name = '{name}'")
    done = [int(v.version) for v in versions if v.source == model_uri]
    return str(max(done)) if done else None


@per_call(recover=_registered_already)
def _register_version(client: MlflowClient, model_uri: str, name: str) -> str:
    """mlflow.register_model, retried on a transient error without ever making a second
    version: it commits the version before its last write (the logged model's tags), so a
    refused call may have registered it already; that version is then the one."""
    return str(mlflow.register_model(model_uri, name, await_registration_for=0).version)


def recheck(name: str, version: str, holder, client: MlflowClient | None = None) -> GateDecision:
    """Decide again for `version`, now against `holder` (the ModelVersion holding the alias
    now, or None), from the gate tags `register_gated` wrote. For the moment before the alias
    moves: another process may have moved it since this version was decided (a tracking server's
    clients share no lock); a version that no longer wins is tagged a challenger, and why."""
    client = client or MlflowClient()
    tags = client.get_model_version(name, version).tags
    context = {k: tags[f"gate.{k}"] for k in (*CONTEXT_KEYS, MODEL_KEY) if f"gate.{k}" in tags}
    gate = decide(
        tags["gate.metric"],
        float(tags["gate.value"]),
        tags["gate.direction"] == "higher",
        float(tags["gate.margin"]),
        context,
        None if holder is None else (str(holder.version), holder.tags),
    )
    if gate.decision != tags["gate.decision"]:
        reason = f"re-decided: the alias moved while this version was gated; {gate.reason}"
        update = {
            "gate.champion_version": gate.champion_version or "none",
            "gate.champion_value": "none"
            if gate.champion_value is None
            else repr(gate.champion_value),
            "gate.reason": reason,
            "gate.decision": gate.decision,  # last, as in register_gated
        }
        for k, v in update.items():
            per_call(client.set_model_version_tag)(name, version, k, v)
        return GateDecision(gate.decision, reason, gate.champion_version, gate.champion_value)
    return gate


def set_champion(
    name: str, version: str, client: MlflowClient | None = None, alias: str = CHAMPION
) -> None:
    """Move the `champion` alias (or `alias`) to `version` (the caller's last step)."""
    per_call((client or MlflowClient()).set_registered_model_alias)(name, alias, version)


def restore_alias(name: str, alias: str, version: str | None) -> None:
    """Put `alias` back on `version` (or remove it when nothing held it). Best effort: called
    while a failure propagates."""
    client = MlflowClient()
    try:
        if version is None:
            per_call(client.delete_registered_model_alias)(name, alias)
        else:
            per_call(client.set_registered_model_alias)(name, alias, version)
    except MlflowException:
        logging.getLogger(__name__).exception("could not restore alias %s of %s", alias, name)


ABORTED = "aborted"


def abort_version(name: str, version: str, why: str) -> None:
    """Mark a registered version whose stage run failed after registering: `gate.decision` =
    aborted (never compared again). Best effort: the original error is what the caller raises."""
    client = MlflowClient()
    try:
        per_call(client.set_model_version_tag)(name, version, "gate.decision", ABORTED)
        per_call(client.set_model_version_tag)(
            name, version, "gate.reason", f"stage run failed: {why}"[:5000]
        )
    except MlflowException:
        logging.getLogger(__name__).exception("could not mark %s v%s aborted", name, version)


def best_gated(
    name: str,
    metric: str,
    higher_is_better: bool,
    context: Mapping[str, str],
    client: MlflowClient | None = None,
):
    """The best decided version of `name` gated on `metric` in the same context, or None.

    Used when `name` has no champion alias (never set, or removed by hand): a new version must
    still beat what is already registered on the same data/shape/split/model, not take the
    alias merely because the alias is gone."""
    client = client or MlflowClient()
    keys = (*CONTEXT_KEYS, MODEL_KEY)
    try:
        found = client.search_model_versions(f"name='{name}'")
    except MlflowException as e:
        if is_missing(e):
            return None
        raise
    same = [
        v
        for v in found
        if v.tags.get("gate.decision") in (CHAMPION, CHALLENGER)
        and v.tags.get("gate.metric") == metric
        and context.get(MODEL_KEY) is not None
        and all(v.tags.get(f"gate.{k}") == context.get(k) for k in keys)
        and math.isfinite(float(v.tags.get("gate.value", "nan")))
    ]
    if not same:
        return None
    sign = 1.0 if higher_is_better else -1.0
    return max(same, key=lambda v: (sign * float(v.tags["gate.value"]), -int(v.version)))


def model_missing(model_uri: str) -> str | None:
    """Why the logged model at `model_uri` can no longer be loaded, or None when it is intact."""
    try:
        root = model_uri
        if model_uri.startswith("models:/m-"):  # a logged model: "models:/m-x/data" would be
            # read as version "data" of a registered model "m-x", so list its real location
            root = MlflowClient().get_logged_model(model_uri.split("/")[-1]).artifact_location
        files = {a.path.rsplit("/", 1)[-1] for a in mlflow.artifacts.list_artifacts(root)}
        weights = mlflow.artifacts.list_artifacts(f"{root}/data") if "data" in files else []
    except MlflowException as e:
        if is_missing(e):
            return f"model {model_uri} is gone ({e.error_code})"
        raise
    if "MLmodel" not in files or not weights:
        return f"model {model_uri} lost its files (MLmodel or data/ missing)"
    return None


def version_missing(name: str, version: str) -> str | None:
    """Why registered version `name` v`version` is gone, or None when it still exists."""
    try:
        MlflowClient().get_model_version(name, version)
    except MlflowException as e:
        if is_missing(e):
            return f"registered version {name} v{version} was deleted"
        raise
    return None


def load_torch_model(model_uri: str, what: str = "model") -> torch.nn.Module:
    """The torch module logged at `model_uri` (a run/logged-model URI or models:/name/version),
    on the CPU in eval mode. A URI that no longer resolves is a clear error naming it."""
    try:
        model = mlflow.pytorch.load_model(model_uri, map_location="cpu")
    except (MlflowException, OSError) as e:
        raise FileNotFoundError(
            f"{what}: cannot load {model_uri} ({e}); re-run the stage that logged it"
        ) from e
    return model.eval()
