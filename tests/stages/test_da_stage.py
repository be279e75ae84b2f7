"""The `da` stage's selection: it never reads target labels, it picks what its criterion says,
its pick and gate data are disjoint, and the protocols score what they claim to."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from adaptflow.config import load_params
from adaptflow.data import Split
from adaptflow.evaluation.da_scores import oriented
from adaptflow.methods.da import DA_METHODS
from adaptflow.stages import da
from tests.conftest import REPO

CPU = torch.device("cpu")


def digits_split(shift: float, seed: int) -> Split:
    """sklearn's 8x8 digits; the target domain is brighter, blurred-by-noise copies."""
    from sklearn.datasets import load_digits

    b = load_digits()
    x = (b.images / 16.0).astype(np.float32)[:, None]
    rng = np.random.default_rng(seed)
    x = np.clip(x * (1 - shift) + shift * rng.random(x.shape, dtype=np.float32), 0, 1)
    y = b.target.astype(np.int64)
    return Split(x[:1400], y[:1400], x[1400:], y[1400:], {})


def params_for(**da):
    over = [f"da.{k}={v}" for k, v in da.items()]
    return load_params(REPO / "params.yaml", over)


@pytest.fixture(scope="module")
def setup():
    params = params_for(
        steps=24,
        checkpoints=3,
        batch_size=32,
        select_points=200,
        max_train=500,
        max_target=400,
        max_test=200,
        **{"grid": "{mcc: {weight: [0.3, 1.0]}}"},
    )
    pc = params.da.pairs["syn2mnist"].model_copy(update={"side": None})
    src = SimpleNamespace(split=digits_split(0.0, 0))
    tgt = SimpleNamespace(split=digits_split(0.4, 1))
    return params, da.pair_data("toy", pc, params.da, src, tgt, seed=0)


def shuffled_target_labels(pd: da.PairData) -> da.PairData:
    """Other target labels with other class shares (a permutation would keep the class
    counts, so a leak of the target's class priors would go unseen): the scored labels
    resampled towards three classes, the pool's all one class."""
    rng = np.random.default_rng(123)
    y_te = rng.choice([0, 1, 2], size=len(pd.y_te), p=[0.6, 0.3, 0.1]).astype(pd.y_te.dtype)
    return replace(pd, y_te=y_te, y_pool=np.zeros_like(pd.y_pool))


class Untouchable:
    """Target labels no selection code may read: not an array, so `np.asarray`, indexing,
    `len`, iteration and every attribute (`.tolist()`, `.shape`, ...) raise."""

    def _refuse(self, *args, **kwargs):
        raise AssertionError("target labels were read")

    __getitem__ = __array__ = __iter__ = __len__ = __bool__ = _refuse
    __array_function__ = __array_ufunc__ = __buffer__ = _refuse

    def __getattr__(self, name):
        self._refuse()


@pytest.mark.parametrize("name", [m for m in DA_METHODS.names() if m != da.ORACLE])
def test_non_oracle_training_and_selection_never_touch_the_pool_labels(setup, name, monkeypatch):
    """The pool's labels exist only for target_oracle: every other method trains, checkpoints
    and selects with them untouchable; scoring (`accuracy` on the scored set) is the only reader
    of target labels and is replaced here by a stub that ignores them."""
    params, pd = setup
    poisoned = replace(pd, y_pool=Untouchable(), y_te=Untouchable())
    monkeypatch.setattr(da, "accuracy", lambda method, x, y, device: 0.0)
    cfg = params.da.model_copy(update={"steps": 6, "checkpoints": 2})
    _, chosen, cands, _ = da.train_and_select(name, cfg, params, poisoned, 0, CPU)
    best = max(cands, key=lambda c: oriented(cfg.selection, c.scores[cfg.selection]))
    assert (chosen.point, chosen.step) == (best.point, best.step)


def test_the_untouchable_labels_do_trip_on_a_real_read(setup, monkeypatch):
    """The control for the test above: target_oracle reads the pool's labels, and is caught."""
    params, pd = setup
    poisoned = replace(pd, y_pool=Untouchable(), y_te=Untouchable())
    monkeypatch.setattr(da, "accuracy", lambda method, x, y, device: 0.0)
    cfg = params.da.model_copy(update={"steps": 6, "checkpoints": 2})
    with pytest.raises(AssertionError, match="target labels were read"):
        da.train_and_select(da.ORACLE, cfg, params, poisoned, 0, CPU)


def test_selection_never_reads_target_labels(setup):
    """Permuting every target label changes what is measured (the oracle-selected accuracy) but
    not one selection score, the chosen checkpoint/grid point or the chosen weights."""
    params, pd = setup
    a_model, a, a_all, _ = da.train_and_select("mcc", params.da, params, pd, 0, CPU)
    b_model, b, b_all, _ = da.train_and_select(
        "mcc", params.da, params, shuffled_target_labels(pd), 0, CPU
    )
    assert len(a_all) == 2 * 3  # 2 grid points x 3 checkpoints
    best = max(a_all, key=lambda c: oriented("dev", c.scores["dev"]))
    assert (a.point, a.step) == (best.point, best.step)
    assert [(c.point, c.step, c.scores) for c in a_all] == [
        (c.point, c.step, c.scores) for c in b_all
    ]
    assert (a.point, a.step) == (b.point, b.step)
    for p, q in zip(a_model.state_dict().values(), b_model.state_dict().values(), strict=True):
        assert torch.equal(p, q)
    assert [c.target_acc for c in a_all] != [c.target_acc for c in b_all]  # labels did change


def test_scores_take_no_target_labels():
    import inspect

    # the whole signature, so a new parameter (e.g. `labels_t`) must be looked at here
    names = list(inspect.signature(da.unsupervised_scores).parameters)
    assert names == ["method", "x_sv", "y_sv", "x_t", "device", "seed"]
    from adaptflow.evaluation import da_scores

    for f in (da_scores.importance_weights, da_scores.snd, da_scores.dev, da_scores.iwcv):
        assert not {"y_t", "labels_t", "y_te", "y_pool"} & set(inspect.signature(f).parameters)


@pytest.mark.parametrize("criterion", ["dev", "snd", "source_val"])
def test_the_chosen_candidate_is_the_criterions_best(setup, criterion):
    params, pd = setup
    cfg = params.da.model_copy(update={"selection": criterion})
    model, chosen, cands, _ = da.train_and_select("source_only", cfg, params, pd, 0, CPU)
    best = max(cands, key=lambda c: oriented(criterion, c.scores[criterion]))
    assert (chosen.step, chosen.scores) == (best.step, best.scores)
    # the returned weights are that checkpoint's: its scores recompute exactly
    sv, t = pd.pick
    again = da.unsupervised_scores(model, pd.x_sv[sv], pd.y_sv[sv], pd.x_t[t], CPU, 0)
    assert again[criterion] == pytest.approx(chosen.scores[criterion], rel=1e-5, abs=1e-6)


def test_pick_and_gate_halves_are_disjoint_and_source_val_is_not_trained_on(setup):
    _, pd = setup
    assert not set(pd.pick[0]) & set(pd.gate[0])
    assert not set(pd.pick[1]) & set(pd.gate[1])
    rows = lambda x: {r.tobytes() for r in x}  # noqa: E731
    assert not rows(pd.x_s) & rows(pd.x_sv)
    assert len(pd.x_t) == 400 and len(pd.x_te) == 200  # max_target, max_test


def test_protocols_score_the_held_out_split_or_the_adapted_set():
    params = params_for(max_target=300, select_points=100)
    src = SimpleNamespace(split=digits_split(0.0, 0))
    tgt = SimpleNamespace(split=digits_split(0.4, 1))
    split_pc = params.da.pairs["syn2mnist"].model_copy(update={"side": None})
    pd = da.pair_data("toy", split_pc, params.da, src, tgt, seed=0)
    rows = lambda x: {r.tobytes() for r in x}  # noqa: E731
    assert rows(pd.x_te) <= rows(tgt.split.x_test) and not rows(pd.x_te) & rows(pd.x_t)
    trans = split_pc.model_copy(update={"protocol": "transductive"})
    pd = da.pair_data("toy", trans, params.da, src, tgt, seed=0)
    assert pd.x_te is pd.x_t and len(pd.x_t) == 300  # scored = the unlabelled set adapted to


def test_registered_method_is_chosen_by_the_criterion_never_the_oracle(setup):
    params, pd = setup
    cfg = params.da.model_copy(
        update={"methods": ["source_only", "mcc", "target_oracle"], "seeds": [0, 1]}
    )
    recs = [
        {"pair": "toy", "method": m, "seed": s, "chosen_dev": v}
        for m, vals in {
            "source_only": [0.9, 0.8],
            "mcc": [0.5, 0.7],
            "target_oracle": [0.0, 0.0],
        }.items()
        for s, v in zip([0, 1], vals, strict=True)
    ]
    models = {}
    for m in ("source_only", "mcc"):
        models[(m, 0)] = da.new_method(m, cfg, params, pd, {}).eval()
    # the choice and its gate read no target label: both label arrays are untouchable
    blind = replace(pd, y_pool=Untouchable(), y_te=Untouchable())
    reg = da.register_choice("toy", recs, cfg, models, blind, CPU, 0)
    assert reg["method"] == "mcc"  # lowest mean DEV; the oracle's 0.0 does not compete
    sv, t = pd.gate  # the gate score is measured on the gate half
    gate = da.unsupervised_scores(models[("mcc", 0)], pd.x_sv[sv], pd.y_sv[sv], pd.x_t[t], CPU, 0)
    assert reg["gate_score"] == pytest.approx(-gate["dev"])


def test_the_gate_half_is_never_trained_on_and_the_oracle_never_scored_on_its_labels(setup):
    _, pd = setup
    assert not set(pd.t_train) & set(pd.gate[1])
    assert set(pd.t_train) | set(pd.gate[1]) == set(range(len(pd.x_t)))
    params = params_for(max_target=300, select_points=100)
    src = SimpleNamespace(split=digits_split(0.0, 0))
    tgt = SimpleNamespace(split=digits_split(0.4, 1))
    trans = params.da.pairs["syn2mnist"].model_copy(
        update={"side": None, "protocol": "transductive"}
    )
    pd = da.pair_data("toy", trans, params.da, src, tgt, seed=0)
    assert not set(pd.oracle_train) & set(pd.oracle_scored)
    x_sc, _ = pd.scored(uses_target_labels=True)
    assert len(x_sc) == len(pd.x_t) - len(pd.oracle_train) and len(pd.scored(False)[0]) == 300


def test_a_non_finite_score_never_wins(setup, monkeypatch):
    """A diverged checkpoint (NaN criterion) must not be chosen, even when it comes first."""
    params, pd = setup
    calls = iter([float("nan"), 0.9, 0.5])
    real = da.unsupervised_scores

    def scores(*args, **kwargs):
        out = real(*args, **kwargs)
        out["dev"] = next(calls)
        return out

    monkeypatch.setattr(da, "unsupervised_scores", scores)
    _, chosen, cands, _ = da.train_and_select("source_only", params.da, params, pd, 0, CPU)
    assert [c.scores["dev"] for c in cands][1:] == [0.9, 0.5]
    assert chosen.step == cands[2].step  # the lowest finite DEV


def test_the_served_models_example_is_raw_target_input():
    """The logged network z-scores its input itself: its input example must be the raw rows,
    not the already standardised ones (else the example would be standardised twice)."""
    from types import SimpleNamespace

    from adaptflow.models.featurizers import Standardize

    raw = np.random.default_rng(0).normal(5.0, 3.0, (6, 4)).astype(np.float32)
    mean, std = raw.mean(0), raw.std(0)
    pd = SimpleNamespace(x_t=(raw - mean) / std, target_stats=(mean, std))
    example = da.raw_target_rows(pd, 4)
    np.testing.assert_allclose(example, raw[:4], rtol=1e-5, atol=1e-5)
    z = Standardize(mean, std)(torch.from_numpy(example)).numpy()
    np.testing.assert_allclose(z, pd.x_t[:4], rtol=1e-5, atol=1e-5)
    plain = SimpleNamespace(x_t=raw, target_stats=None)
    assert da.raw_target_rows(plain, 2) is not None and np.array_equal(
        da.raw_target_rows(plain, 2), raw[:2]
    )
