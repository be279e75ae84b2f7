"""Label budgets shared by the stages that train with labels (pretrain, finetune).

N = the labelled training-split images a stage may use (test is a separate array: no index here
reaches it). A seeded split gives a *pool* (labelled subsets are drawn from it) and a *monitor*
split. At fraction f, every label a run touches (training and checkpoint selection) is within
floor(f·N); the monitor only draws curves, and at f = 1 (inside that budget) measures the
registry gate. Subsets are class-stratified, as in the semi-supervised literature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from adaptflow.stages.base import split_train_val


def stratified_sample(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted positions of a class-stratified, seeded sample of n entries of y (all if n >= len)."""
    if n >= len(y):
        return np.arange(len(y))
    from sklearn.model_selection import StratifiedShuffleSplit

    n_classes = len(np.unique(y))
    if n < n_classes or len(y) - n < n_classes:  # too few to stratify: a plain seeded draw
        return np.sort(np.random.default_rng(seed).choice(len(y), n, replace=False))
    split = StratifiedShuffleSplit(n_splits=1, train_size=n, random_state=seed)
    idx, _ = next(split.split(np.zeros(len(y)), y))
    return np.sort(idx)


@dataclass(frozen=True)
class DataPlan:
    """Index sets into the training split (test is another array: no index here reaches it)."""

    pool: np.ndarray  # unlabeled pretraining images; every labelled subset is drawn from here
    monitor: np.ndarray  # labelled curves (and, at f = 1, the gate); selects nothing

    @property
    def n_total(self) -> int:
        """N of the budget floor(f·N): every training-split image the stage may label."""
        return len(self.pool) + len(self.monitor)

    def allowed(self, fraction: float) -> int:
        """floor(f·N): the labels a run at `fraction` may touch (training + selection)."""
        return math.floor(fraction * self.n_total + 1e-9)  # 1e-9: 0.05 * 4000 is 200, not 199


@dataclass(frozen=True)
class LabelBudget:
    fraction: float
    allowed: int  # floor(f·N)
    fit: np.ndarray  # training-split indices the net is trained on
    select: np.ndarray  # ... that choose its checkpoint (empty with last_epoch)

    @property
    def used(self) -> np.ndarray:
        return np.concatenate([self.fit, self.select])


def data_plan(n_train: int, val_fraction: float, max_train: int | None, seed: int) -> DataPlan:
    pool, monitor = split_train_val(n_train, val_fraction, max_train, seed)
    return DataPlan(np.sort(pool), np.sort(monitor))


def label_budget(
    y: np.ndarray,
    plan: DataPlan,
    fraction: float,
    seed: int,
    selection: str,
    select_fraction: float,
    key: str = "pretrain.label_fractions",
) -> LabelBudget:
    """Which labels fine-tuning at `fraction` may touch: fit (+ select) <= floor(f·N), from the pool.

    `y` are the labels of the whole training split; the sample is seeded and class-balanced
    (stratified, as in the semi-supervised literature): the balancing reads the pool's labels.
    `adaptflow.stages.validate` refuses budgets below the class count before any run; the raise
    here is a safety net.
    """
    allowed = plan.allowed(fraction)
    n_classes = len(np.unique(y[plan.pool]))
    if allowed < n_classes:
        raise ValueError(
            f"{key}: {fraction:g} x {plan.n_total} images = {allowed} labels, "
            f"fewer than the {n_classes} classes; raise the fraction"
        )
    lab = plan.pool[stratified_sample(y[plan.pool], min(allowed, len(plan.pool)), seed)]
    if selection == "last_epoch":
        return LabelBudget(fraction, allowed, lab, lab[:0])
    n_select = max(1, int(round(select_fraction * len(lab))))
    sel = stratified_sample(y[lab], n_select, seed + 1)
    keep = np.ones(len(lab), bool)
    keep[sel] = False
    return LabelBudget(fraction, allowed, lab[keep], lab[sel])


def gate_indices(
    plan: DataPlan, budget: LabelBudget, key: str = "pretrain.label_fractions"
) -> np.ndarray:
    """Validation labels for the registry gate: the monitor, inside the f = 1 budget only.

    Never the selection split (it chose the checkpoint: a biased gate). `validate` and `config`
    refuse a largest fraction < 1 before any run; this raise is a safety net.
    """
    if len(budget.used) + len(plan.monitor) <= budget.allowed:
        return plan.monitor
    raise ValueError(
        f"no validation labels inside the {budget.fraction:g} budget for the registry gate: "
        f"include 1.0 in {key} (the f=1 model is gated on the monitor split)"
    )


def chance_threshold(n_classes: int) -> float:
    """Accuracy a curve must reach to have left chance: 1/K + 10 % of the way from chance to
    perfect, 1/K + 0.1·(1 − 1/K) (19 % for K = 10 digits, 55 % for K = 2)."""
    return 1.0 / n_classes + 0.1 * (1.0 - 1.0 / n_classes)


def epochs_to_reach(curve: list[float], target: float, n_classes: int) -> int | None:
    """First epoch (1-based) whose accuracy is >= target; None ("not converged") if no epoch
    reaches it within the budget, or if the curve never leaves chance (best < chance_threshold)."""
    if max(curve) < chance_threshold(n_classes):
        return None
    return next((i for i, v in enumerate(curve, 1) if v >= target), None)


def epochs_to_common_level(
    curves: dict[str, list[float]], level: float, n_classes: int
) -> dict[str, int | None]:
    """Epochs each arm needs to reach one common target, level x the best accuracy of ANY arm
    (same seed and fraction): an arm stalling low never 'converges' to its own low best."""
    target = level * max(max(c) for c in curves.values())
    return {arm: epochs_to_reach(c, target, n_classes) for arm, c in curves.items()}


# ------------------------------------------------------------------ verdicts and report
