"""Unsupervised domain adaptation without target labels: scores to select a model and to
measure the gap between domains.

Nothing here takes target labels; no signature has a parameter for them (a test checks it).
Target inputs are only softmax outputs `probs_t` or features `f_t`; source inputs are features
`f_s` and per-example losses `losses_s` of a labelled source validation split.

Model selection (one value per candidate model; `CRITERIA` says which way is better):
- prediction entropy of the target predictions (lower = more confident);
- SND, Soft Neighborhood Density (Saito et al., ICCV 2021; higher = denser neighbourhoods);
- IWCV, importance-weighted source validation loss (Sugiyama et al., JMLR 2007; lower);
- DEV, Deep Embedded Validation (You et al., ICML 2019): IWCV with a control variate (lower);
- source validation accuracy, computed by the caller (higher).

Distribution gap between source and target features (not criteria: they describe the data):
- proxy A-distance (Ben-David et al. 2007; Ganin et al. 2016), in [0, 2];
- multi-kernel MMD² (the DAN estimator of `losses.alignment.mmd2`), >= 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp, xlogy

DEFAULT_MAX_POINTS = 1000  # per domain: bounds the O(n²) memory of SND, PAD and MMD
DEFAULT_MAX_WEIGHT = 10.0  # importance weights are truncated here (on the mean-1 scale)
PAD_C_GRID = (0.01, 0.1, 1.0, 10.0)  # inverse regularisation of the PAD domain classifier


# ---------------------------------------------------------------- helpers
def _rows(x) -> np.ndarray:
    """float64 (n, d): one row per example, any trailing shape flattened."""
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(len(x), -1)


def _probs(probs_t) -> np.ndarray:
    p = np.asarray(probs_t, dtype=np.float64)
    if p.ndim != 2 or len(p) == 0:
        raise ValueError(f"expected target probabilities (n, K), got shape {p.shape}")
    # logits passed by mistake would give a number without meaning
    if (p < -1e-6).any() or not np.allclose(p.sum(1), 1.0, atol=1e-4):
        raise ValueError("probs_t rows must be probabilities (softmax outputs), not logits")
    return p.clip(0.0, 1.0)


def _subsample(x: np.ndarray, max_points: int, rng: np.random.Generator) -> np.ndarray:
    if len(x) <= max_points:
        return x
    return x[np.sort(rng.choice(len(x), max_points, replace=False))]


def _losses_and_weights(losses_s, weights) -> tuple[np.ndarray, np.ndarray]:
    losses = np.asarray(losses_s, dtype=np.float64).ravel()
    w = np.asarray(weights, dtype=np.float64).ravel()
    if len(losses) != len(w) or len(w) == 0:
        raise ValueError(f"need one weight per source loss, got {len(losses)} and {len(w)}")
    return losses, w


# ---------------------------------------------------------------- target-prediction scores
def prediction_entropy(probs_t) -> float:
    """Mean Shannon entropy (nats) of the target softmax outputs (n, K): 0 for one-hot rows,
    log K for uniform ones. Lower = more confident."""
    p = _probs(probs_t)
    return float(-xlogy(p, p).sum(1).mean())


def snd(
    probs_t, temperature: float = 0.05, max_points: int = DEFAULT_MAX_POINTS, seed: int = 0
) -> float:
    """Soft Neighborhood Density (Saito et al., ICCV 2021, eq. 1-3). Higher = better.

    The target softmax vectors are L2-normalised; each row i gets a distribution over its
    neighbours j != i, softmax_j(cos(p_i, p_j) / temperature), and SND is the mean entropy of
    those rows: high when every point has many close neighbours (dense clusters), low when each
    has only a few. A point is never its own neighbour (probability exactly 0). At most
    `max_points` rows (seeded subsample) bound the (n, n) similarity matrix.

    SND rewards clumping, not correctness: n identical rows (e.g. every prediction uniform)
    give its maximum log(n − 1). Compare candidates trained on the same task.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    p = _subsample(_probs(probs_t), max_points, np.random.default_rng(seed))
    if len(p) < 2:
        raise ValueError("SND needs at least 2 target examples")
    p = p / np.linalg.norm(p, axis=1, keepdims=True).clip(1e-12)
    logits = p @ p.T / temperature
    np.fill_diagonal(logits, -np.inf)
    log_q = logits - logsumexp(logits, axis=1, keepdims=True)
    q = np.exp(log_q)
    return float(-xlogy(q, q).sum(1).mean())


# ---------------------------------------------------------------- importance weighting
def _truncate_to_mean_one(ratio: np.ndarray, max_weight: float) -> np.ndarray:
    """min(c · ratio, max_weight) with the scale c chosen so that the mean is exactly 1
    (truncated importance weights that stay in [0, max_weight])."""
    from scipy.optimize import brentq

    def mean_minus_one(c: float) -> float:
        return float(np.minimum(c * ratio, max_weight).mean() - 1.0)

    c_hi = max_weight / ratio.min()  # every weight at max_weight >= 1: the root is below
    c = brentq(mean_minus_one, 0.0, c_hi, xtol=1e-12 * c_hi)
    w = np.minimum(c * ratio, max_weight)
    return w / w.mean()  # removes brentq's last 1e-12 of error; no weight moves noticeably


def importance_weights(
    f_s,
    f_t,
    seed: int = 0,
    max_weight: float = DEFAULT_MAX_WEIGHT,
    folds: int = 5,
    normalise: bool = True,
) -> np.ndarray:
    """Density ratios w(x) = p_t(x) / p_s(x) at the source validation features f_s.

    Discriminative estimate (Bickel et al. 2007; as in DEV): a logistic regression on
    standardised features separates source (0) from target (1); by Bayes,
    w(x) = P(t | x) / P(s | x) · n_s / n_t (the prior ratio corrects for unequal sample sizes).
    The classifier is cross-fitted (`folds`-fold `cross_val_predict` over the pooled sample), so
    no source point's weight comes from a classifier that saw it.

    With `normalise` (the default) weights are truncated at `max_weight` and rescaled to mean 1,
    exactly: w = min(c · ratio, max_weight) with c solving mean(w) = 1, so w ∈ [0, max_weight].
    Without it the raw ratios are only clipped to [0, max_weight]; pass raw weights to `dev`,
    whose control variate uses how far mean(w) is from 1 (see `dev`).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if max_weight < 1:
        raise ValueError(f"max_weight must be >= 1 (the weights have mean 1), got {max_weight}")
    f_s, f_t = _rows(f_s), _rows(f_t)
    n_s, n_t = len(f_s), len(f_t)
    if min(n_s, n_t) < folds:
        raise ValueError(f"need at least {folds} examples per domain, got {n_s} and {n_t}")
    x = np.concatenate([f_s, f_t])
    is_target = np.r_[np.zeros(n_s, int), np.ones(n_t, int)]
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    p_t = cross_val_predict(clf, x, is_target, cv=cv, method="predict_proba")[:n_s, 1]
    p_t = p_t.clip(1e-6, 1 - 1e-6)
    ratio = p_t / (1 - p_t) * (n_s / n_t)
    if normalise:
        return _truncate_to_mean_one(ratio, max_weight)
    return np.minimum(ratio, max_weight)


def effective_sample_fraction(weights) -> float:
    """Kish's effective sample size over n, (Σw)² / (n Σw²) ∈ (0, 1]: 1 for equal weights, 1/n
    when one point carries all the weight (0 for all-zero weights)."""
    w = np.asarray(weights, dtype=np.float64)
    sq = float((w**2).sum())
    return float(w.sum() ** 2 / (len(w) * sq)) if len(w) and sq > 0 else 0.0


def iwcv(losses_s, weights) -> float:
    """Importance-weighted validation loss mean(w · ℓ) over the source validation split
    (Sugiyama et al. 2007): an estimate of the target risk. Lower = better."""
    losses, w = _losses_and_weights(losses_s, weights)
    return float(np.mean(w * losses))


def dev(losses_s, weights) -> float:
    """Deep Embedded Validation (You et al., ICML 2019, Alg. 1). Lower = better.

    IWCV with the weights as control variate (E[w] = 1 under the source): with L = w · ℓ,
    η = −Cov(L, w) / Var(w) and DEV = mean(L) + η · mean(w) − η, the variance-optimal unbiased
    correction. η = 0 when the weights are constant. With weights normalised to mean 1 the
    correction term is 0 and DEV equals self-normalised IWCV: give DEV the raw weights
    (`importance_weights(..., normalise=False)`) to use its control variate.
    """
    losses, w = _losses_and_weights(losses_s, weights)
    weighted = w * losses
    if len(w) < 2 or np.ptp(w) == 0:  # constant weights: nothing to correct
        return float(weighted.mean())
    eta = -np.cov(weighted, w, ddof=1)[0, 1] / w.var(ddof=1)
    return float(weighted.mean() + eta * w.mean() - eta)


# ---------------------------------------------------------------- distribution gap
def _balanced_sample(
    f_s: np.ndarray, f_t: np.ndarray, max_points: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(f_s), len(f_t), max_points)
    return _subsample(f_s, n, rng), _subsample(f_t, n, rng)


def proxy_a_distance(f_s, f_t, seed: int = 0, max_points: int = DEFAULT_MAX_POINTS) -> float:
    """Proxy A-distance 2 (1 − 2 ε) (Ben-David et al. 2007; Ganin et al. 2016, sec. 5.1.3).

    ε is the test error of a linear domain classifier (logistic regression on standardised
    features, C chosen by 3-fold CV on the training half only) trained on half of a balanced
    sample (each domain subsampled to min(n_s, n_t, max_points), seeded) and tested on the other
    half. ε is clipped to <= 0.5 (a classifier worse than chance is no evidence of a gap), so
    PAD ∈ [0, 2]: ~0 for indistinguishable domains, 2 for linearly separable ones.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    s, t = _balanced_sample(_rows(f_s), _rows(f_t), max_points, rng)
    if len(s) < 6:
        raise ValueError(f"PAD needs at least 6 examples per domain, got {len(s)}")
    x = np.concatenate([s, t])
    is_target = np.r_[np.zeros(len(s), int), np.ones(len(t), int)]
    x_train, x_test, d_train, d_test = train_test_split(
        x, is_target, test_size=0.5, stratify=is_target, random_state=seed
    )
    clf = GridSearchCV(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        {"logisticregression__C": list(PAD_C_GRID)},
        cv=StratifiedKFold(3, shuffle=True, random_state=seed),
    ).fit(x_train, d_train)
    error = min(1.0 - clf.score(x_test, d_test), 0.5)
    return float(2.0 * (1.0 - 2.0 * error))


def feature_mmd(f_s, f_t, seed: int = 0, max_points: int = DEFAULT_MAX_POINTS) -> float:
    """Multi-kernel MMD² (biased estimate; Gaussian kernels at multiples of the median pairwise
    distance) between seeded subsamples of at most `max_points` per domain: 0 for equal
    samples, growing with the shift."""
    import torch

    from adaptflow.losses.alignment import mmd2

    rng = np.random.default_rng(seed)
    s = _subsample(_rows(f_s), max_points, rng)
    t = _subsample(_rows(f_t), max_points, rng)
    with torch.no_grad():
        return float(mmd2(torch.from_numpy(s), torch.from_numpy(t)).item())


# ---------------------------------------------------------------- selection
@dataclass(frozen=True)
class Criterion:
    description: str
    higher_is_better: bool


CRITERIA: dict[str, Criterion] = {
    "dev": Criterion("Deep Embedded Validation of the source validation loss", False),
    "iwcv": Criterion("importance-weighted source validation loss", False),
    "snd": Criterion("soft neighborhood density of the target predictions", True),
    "entropy": Criterion("mean entropy of the target predictions", False),
    "source_val": Criterion("source validation accuracy (ignores the shift)", True),
}


def _criterion(name: str) -> Criterion:
    if name not in CRITERIA:
        raise KeyError(f"unknown criterion {name!r}; valid: {', '.join(sorted(CRITERIA))}")
    return CRITERIA[name]


def oriented(name: str, value: float) -> float:
    """The criterion's value turned "higher is better" (negated for loss-like criteria)."""
    return float(value) if _criterion(name).higher_is_better else -float(value)


def select(scores: list[dict[str, float]], criterion: str) -> int:
    """Index of the best candidate under `criterion`, given one dict of scores per candidate;
    ties go to the first. A NaN score never wins."""
    _criterion(criterion)
    if not scores:
        raise ValueError("no candidates to select from")
    missing = [i for i, s in enumerate(scores) if criterion not in s]
    if missing:
        raise KeyError(f"candidates {missing} have no {criterion!r} score")
    values = np.array([oriented(criterion, s[criterion]) for s in scores])
    if np.isnan(values).all():
        raise ValueError(f"every candidate's {criterion!r} score is NaN")
    return int(np.argmax(np.where(np.isnan(values), -np.inf, values)))  # first maximum
