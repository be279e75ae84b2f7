"""A toy stage for registry/cache tests: no data files, a tiny real adaptflow model, seconds."""

from __future__ import annotations

import numpy as np
import torch

from adaptflow.methods.ae import AE_METHODS
from adaptflow.models.factory import NetSpec
from adaptflow.stages.base import STAGES, Gate, StageContext, StageOutcome, StageSpec

METRIC = "ae/gate_val_mse"
CONTEXT = {
    "dataset_digest": "d0",
    "input_shape": "1x28x28",
    "val_split": "v0",
    "model": "toy-ae",
}


def tiny_ae(seed: int = 0):
    torch.manual_seed(seed)
    return AE_METHODS.get("ae")(NetSpec((1, 28, 28), hidden=(8,), code_size=2))


def toy_stage(
    monkeypatch, values: list[float | dict], contexts: list[dict] | None = None
) -> list[int]:
    """Replace stage `ae` by one that logs an artifact and a tiny model and reports the next of
    `values` as its gate metric (and the next of `contexts`). Returns a list counting its runs."""
    from adaptflow.tracking import runs
    from adaptflow.tracking.models import log_torch_model

    calls: list[int] = []

    def run(params, ctx, data):
        i = len(calls)
        calls.append(i)
        runs.log_text(f"report {i}", "ae/report.md")
        uri = log_torch_model(tiny_ae(i), np.zeros((2, 1, 28, 28), np.float32))
        ctx_i = (contexts or [CONTEXT] * len(values))[i]
        v = values[i]  # a dict: the stage's metrics as they are (e.g. one of them dropped)
        metrics = dict(v) if isinstance(v, dict) else {METRIC: v, "ae/test_mse": v}
        runs.log_metrics(metrics)
        return StageOutcome(
            model_name=params.model_name("ae"),
            metrics=metrics,
            model_uri=uri,
            gate_context=dict(ctx_i),
        )

    spec = StageSpec(
        name="ae",
        datasets=lambda p: [],
        run=run,
        headline=("ae/test_mse",),
        gate=Gate(METRIC, higher_is_better=False),
    )
    monkeypatch.setitem(STAGES._items, "ae", spec)
    return calls


def context(root, experiment_id: str, force: bool = False) -> StageContext:
    return StageContext(
        root=root,
        experiment_id=experiment_id,
        device=torch.device("cpu"),
        progress=False,
        force=force,
    )
