"""Known values of the label-free domain-adaptation scores: model-selection criteria (entropy,
SND, IWCV, DEV) and distribution gaps (proxy A-distance, MMD)."""

from __future__ import annotations

import inspect
import math
import re

import numpy as np
import pytest
import torch

from adaptflow.evaluation import da_scores
from adaptflow.evaluation.da_scores import (
    CRITERIA,
    dev,
    feature_mmd,
    importance_weights,
    iwcv,
    oriented,
    prediction_entropy,
    proxy_a_distance,
    select,
    snd,
)
from adaptflow.losses.alignment import mmd2


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def class_predictions(n: int, k: int, noise: float, seed: int) -> np.ndarray:
    """Softmax outputs around the k one-hot corners, n // k each; `noise` spreads them."""
    rng = np.random.default_rng(seed)
    return softmax(6.0 * np.eye(k)[np.arange(n) % k] + rng.normal(0, noise, (n, k)))


# ---------------------------------------------------------------- labels never enter
def test_no_public_function_can_take_target_labels():
    public = [
        f
        for name, f in inspect.getmembers(da_scores, inspect.isfunction)
        if not name.startswith("_") and f.__module__ == da_scores.__name__
    ]
    assert {f.__name__ for f in public} >= {
        "prediction_entropy",
        "snd",
        "importance_weights",
        "iwcv",
        "dev",
        "proxy_a_distance",
        "feature_mmd",
        "oriented",
        "select",
    }
    for f in public:
        params = inspect.signature(f).parameters
        for p in params:
            assert not re.search(r"^y($|_)|label|^targets?$", p), (f.__name__, p)
            # the only target-side inputs are predictions and features
            if p.endswith("_t"):
                assert p in {"probs_t", "f_t"}, (f.__name__, p)
        assert not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params.values()), (
            f.__name__
        )


# ---------------------------------------------------------------- entropy
def test_prediction_entropy_is_log_k_for_uniform_and_zero_for_one_hot():
    assert prediction_entropy(np.full((5, 4), 0.25)) == pytest.approx(math.log(4))
    assert prediction_entropy(np.eye(3)[[0, 2, 1, 1]]) == 0.0
    # the mean over rows: one uniform row over 2 classes and one one-hot row
    assert prediction_entropy([[0.5, 0.5], [1.0, 0.0]]) == pytest.approx(math.log(2) / 2)


def test_prediction_scores_reject_logits():
    logits = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]])
    with pytest.raises(ValueError, match="logits"):
        prediction_entropy(logits)
    with pytest.raises(ValueError, match="logits"):
        snd(logits)


# ---------------------------------------------------------------- SND
def brute_force_snd(p: np.ndarray, temperature: float) -> float:
    n = len(p)
    unit = [row / math.sqrt(sum(v * v for v in row)) for row in p]
    total = 0.0
    for i in range(n):
        sims = [float(np.dot(unit[i], unit[j])) / temperature for j in range(n) if j != i]
        z = sum(math.exp(s) for s in sims)
        total += -sum(math.exp(s) / z * math.log(math.exp(s) / z) for s in sims)
    return total / n


@pytest.mark.parametrize("temperature", [0.05, 0.5])
def test_snd_matches_a_brute_force_computation(temperature):
    p = np.random.default_rng(3).dirichlet(np.ones(3), 7)
    assert snd(p, temperature) == pytest.approx(brute_force_snd(p, temperature), rel=1e-9)


def test_snd_known_values_without_self_neighbours():
    # n identical rows: every row spreads evenly over its n - 1 neighbours (self excluded)
    assert snd(np.full((6, 3), 1 / 3)) == pytest.approx(math.log(5))
    assert snd(np.eye(4)[[1, 1]]) == pytest.approx(0.0)  # two points: one neighbour each
    # the subsample bounds the matrix: 50 of 400 identical rows
    assert snd(np.full((400, 3), 1 / 3), max_points=50) == pytest.approx(math.log(49))


def test_snd_prefers_tight_clusters_to_diffuse_predictions():
    tight = class_predictions(300, 10, noise=0.3, seed=0)
    diffuse = class_predictions(300, 10, noise=4.0, seed=0)
    # 10 clusters of 30 near-identical points: close to the log(29) of exact clusters
    assert snd(tight) == pytest.approx(math.log(29), abs=0.02)
    assert snd(tight) > snd(diffuse) + 0.2


# ---------------------------------------------------------------- importance weights
def test_importance_weights_follow_the_true_density_ratio():
    rng = np.random.default_rng(0)
    mu = np.array([1.0, 0.0])
    f_s, f_t = rng.normal(size=(500, 2)), rng.normal(size=(400, 2)) + mu
    w = importance_weights(f_s, f_t, seed=0, max_weight=10.0)
    true = np.exp(f_s @ mu - mu @ mu / 2)  # N(mu, I) / N(0, I)
    assert np.corrcoef(w, true)[0, 1] > 0.8
    assert w.mean() == pytest.approx(1.0, abs=1e-9)
    assert w.min() >= 0 and w.max() <= 10.0 + 1e-9
    # source points on the target's side weigh more than those on the far side
    assert w[f_s[:, 0] > 1].mean() > 3 * w[f_s[:, 0] < -1].mean()


def test_importance_weights_truncate_at_max_weight_and_keep_mean_one():
    rng = np.random.default_rng(1)
    f_s, f_t = rng.normal(size=(300, 2)), rng.normal(size=(300, 2)) + [3.0, 0.0]
    w = importance_weights(f_s, f_t, seed=0, max_weight=5.0)
    assert w.max() == pytest.approx(5.0)
    assert w.mean() == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(ValueError):
        importance_weights(f_s, f_t, max_weight=0.5)


def test_importance_weights_are_near_one_for_equal_distributions():
    rng = np.random.default_rng(2)
    w = importance_weights(rng.normal(size=(400, 5)), rng.normal(size=(400, 5)), seed=0)
    assert w.std() < 0.3


def test_importance_weights_correct_for_unequal_sample_sizes():
    rng = np.random.default_rng(3)
    f_s, f_t = rng.normal(size=(600, 3)), rng.normal(size=(150, 3))
    # raw ratios: the domain prior 150/750 is divided out, so equal laws still give w ~ 1
    raw = importance_weights(f_s, f_t, seed=0, normalise=False)
    assert raw.mean() == pytest.approx(1.0, abs=0.1)


# ---------------------------------------------------------------- IWCV and DEV
def test_iwcv_with_unit_weights_is_the_mean_loss():
    losses = np.array([0.2, 1.5, 0.7, 3.0])
    assert iwcv(losses, np.ones(4)) == pytest.approx(losses.mean())
    assert iwcv(losses, [0.0, 2.0, 0.0, 2.0]) == pytest.approx((3.0 + 6.0) / 4)
    with pytest.raises(ValueError):
        iwcv(losses, np.ones(3))


def test_dev_equals_iwcv_for_constant_weights_and_has_a_known_value():
    losses = np.array([0.2, 1.5, 0.7, 3.0])
    assert dev(losses, np.full(4, 2.5)) == pytest.approx(iwcv(losses, np.full(4, 2.5)))
    # L = w·ℓ = [1, 4, 9]: Cov(L, w) = 4, Var(w) = 1, η = -4, DEV = 14/3 + η·2 − η = 2/3
    assert dev([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == pytest.approx(2 / 3)
    # weights of mean exactly 1 leave nothing to correct: DEV = IWCV
    w = np.array([0.5, 1.2, 1.3])
    assert dev([1.0, 2.0, 3.0], w) == pytest.approx(iwcv([1.0, 2.0, 3.0], w))


def test_dev_estimates_the_target_risk_with_less_spread_than_iwcv():
    # source N(0, 1), target N(1, 1): true weights exp(x − 1/2); a loss rising toward the target
    rng = np.random.default_rng(0)
    iw, dv = [], []
    for _ in range(300):
        x = rng.normal(size=100)
        w, losses = np.exp(x - 0.5), 1 / (1 + np.exp(-2 * x))
        iw.append(iwcv(losses, w))
        dv.append(dev(losses, w))
    target_risk = np.mean(1 / (1 + np.exp(-2 * (rng.normal(size=200_000) + 1))))
    assert np.mean(iw) == pytest.approx(target_risk, abs=0.03)
    assert np.mean(dv) == pytest.approx(target_risk, abs=0.01)
    assert np.std(dv) < 0.5 * np.std(iw)


# ---------------------------------------------------------------- distribution gaps
def test_proxy_a_distance_is_zero_for_equal_laws_and_two_for_separated_ones():
    rng = np.random.default_rng(0)
    f_s = rng.normal(size=(800, 5))
    same = proxy_a_distance(f_s, rng.normal(size=(800, 5)), seed=0)
    mid = proxy_a_distance(f_s, rng.normal(size=(800, 5)) + 0.5, seed=0)
    far = proxy_a_distance(f_s, rng.normal(size=(800, 5)) + 5.0, seed=0)
    assert same < 0.3
    assert far > 1.8
    assert same + 0.3 < mid < far - 0.3


def test_proxy_a_distance_clips_worse_than_chance_errors_to_zero():
    # one law: the held-out error scatters around 0.5; above it, PAD is 0 (not negative)
    rng = np.random.default_rng(0)
    f_s, f_t = rng.normal(size=(800, 5)), rng.normal(size=(800, 5))
    pads = [proxy_a_distance(f_s, f_t, seed=seed) for seed in range(6)]
    assert min(pads) == 0.0
    assert all(0.0 <= p < 0.3 for p in pads)


def test_proxy_a_distance_balances_the_domains():
    # 10:1 sizes from one law: an unbalanced test set would give ε ≈ 1/11 and PAD ≈ 1.6
    rng = np.random.default_rng(1)
    assert proxy_a_distance(rng.normal(size=(2000, 4)), rng.normal(size=(200, 4)), seed=0) < 0.3


def test_feature_mmd_is_zero_for_a_sample_with_itself_and_grows_with_the_shift():
    rng = np.random.default_rng(0)
    f_s = rng.normal(size=(200, 4)).astype(np.float32)
    assert feature_mmd(f_s, f_s) == pytest.approx(0.0, abs=1e-6)
    gaps = [feature_mmd(f_s, rng.normal(size=(200, 4)) + shift) for shift in (0.0, 0.5, 2.0)]
    assert gaps[0] < gaps[1] < gaps[2]
    assert gaps[1] > 5 * gaps[0]
    # below max_points it is exactly the training-time estimator
    expected = mmd2(torch.from_numpy(f_s[:50]).double(), torch.from_numpy(f_s[50:90]).double())
    assert feature_mmd(f_s[:50], f_s[50:90]) == pytest.approx(expected.item(), rel=1e-5)


def test_feature_mmd_subsample_is_seeded():
    rng = np.random.default_rng(0)
    f_s, f_t = rng.normal(size=(300, 3)), rng.normal(size=(300, 3)) + 0.5
    assert feature_mmd(f_s, f_t, seed=4, max_points=100) == feature_mmd(
        f_s, f_t, seed=4, max_points=100
    )
    assert feature_mmd(f_s, f_t, seed=4, max_points=100) != feature_mmd(
        f_s, f_t, seed=5, max_points=100
    )


# ---------------------------------------------------------------- selection
def test_criteria_registry_orientation():
    assert set(CRITERIA) == {"dev", "iwcv", "snd", "entropy", "source_val"}
    higher = {name for name, c in CRITERIA.items() if c.higher_is_better}
    assert higher == {"snd", "source_val"}
    assert oriented("snd", 2.0) == 2.0 and oriented("dev", 2.0) == -2.0
    with pytest.raises(KeyError, match="source_val"):
        oriented("accuracy", 1.0)


def test_select_maximises_higher_better_and_minimises_lower_better_scores():
    scores = [
        {"snd": 3.0, "dev": 0.9, "iwcv": 0.4, "entropy": 0.5, "source_val": 0.80},
        {"snd": 3.5, "dev": 0.2, "iwcv": 0.6, "entropy": 0.1, "source_val": 0.95},
        {"snd": 2.0, "dev": 0.5, "iwcv": 0.3, "entropy": 0.1, "source_val": 0.95},
    ]
    assert select(scores, "snd") == 1  # argmax
    assert select(scores, "dev") == 1  # argmin
    assert select(scores, "iwcv") == 2  # argmin
    assert select(scores, "entropy") == 1  # a tie goes to the first
    assert select(scores, "source_val") == 1
    assert select([{"dev": float("nan")}, {"dev": 5.0}], "dev") == 1  # NaN never wins
    with pytest.raises(KeyError):
        select(scores, "pad")
    with pytest.raises(KeyError):
        select([{"snd": 1.0}, {"dev": 1.0}], "snd")
    with pytest.raises(ValueError):
        select([], "snd")


def test_effective_sample_fraction_known_values():
    from adaptflow.evaluation.da_scores import effective_sample_fraction

    assert effective_sample_fraction(np.full(50, 0.3)) == pytest.approx(1.0)
    assert effective_sample_fraction(np.r_[5.0, np.zeros(99)]) == pytest.approx(0.01)
    w = np.array([1.0, 1.0, 2.0, 0.0])  # (4)² / (4 · 6)
    assert effective_sample_fraction(w) == pytest.approx(16 / 24)
    assert effective_sample_fraction(np.zeros(3)) == 0.0
