"""Metrics on numpy arrays, all through scikit-learn where it has them."""

from __future__ import annotations

import numpy as np


def psnr(x_hat: np.ndarray, x: np.ndarray, peak: float = 1.0) -> float:
    """Mean per-image peak signal-to-noise ratio in dB (images in [0, peak])."""
    mse = ((x_hat.astype(np.float64) - x) ** 2).reshape(len(x), -1).mean(1)
    return float(np.mean(10 * np.log10(peak**2 / np.maximum(mse, 1e-12))))


def _features(z_train: np.ndarray, z_test: np.ndarray):
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(z_train.reshape(len(z_train), -1))
    return scaler.transform(z_train.reshape(len(z_train), -1)), scaler.transform(
        z_test.reshape(len(z_test), -1)
    )


def linear_probe_accuracy(z_train, y_train, z_test, y_test, seed: int = 0) -> float:
    """Accuracy of a logistic regression trained on frozen codes (standardised)."""
    from sklearn.linear_model import LogisticRegression

    f_train, f_test = _features(z_train, z_test)
    clf = LogisticRegression(max_iter=2000, random_state=seed).fit(f_train, y_train)
    return float(clf.score(f_test, y_test))


def knn_accuracy(z_train, y_train, z_test, y_test, k: int = 5) -> float:
    from sklearn.neighbors import KNeighborsClassifier

    f_train, f_test = _features(z_train, z_test)
    return float(KNeighborsClassifier(n_neighbors=k).fit(f_train, y_train).score(f_test, y_test))


def anomaly_auroc(scores: np.ndarray, is_anomaly: np.ndarray) -> float:
    """AUROC of anomaly scores (higher = more anomalous) against the true anomaly labels."""
    from sklearn.metrics import roc_auc_score

    if is_anomaly.all() or not is_anomaly.any():
        raise ValueError("anomaly AUROC needs both normal and anomalous examples")
    return float(roc_auc_score(is_anomaly.astype(int), scores))


# ---------------------------------------------------------------- sparse codes (seed Q2)
DEAD_ACTIVATION = 1e-3  # a unit whose mean activation over the test set is below this is "dead"


def unit_activation_stats(
    z: np.ndarray, rho: float, dead_threshold: float = DEAD_ACTIVATION
) -> dict[str, float]:
    """Per-unit view of sigmoid codes z (N, units): the share of units whose mean activation
    rho_hat_j lies in [rho/2, 2 rho] (two-sided: neither dead nor always on), the number of dead
    units (rho_hat_j < dead_threshold) and the overall mean activation."""
    rho_hat = z.reshape(len(z), -1).astype(np.float64).mean(0)
    in_band = (rho_hat >= rho / 2) & (rho_hat <= 2 * rho)
    return {
        "unit_band_fraction": float(in_band.mean()),
        "dead_units": float((rho_hat < dead_threshold).sum()),
        "mean_activation": float(rho_hat.mean()),
    }


# ---------------------------------------------------------------- generation (seed Q2, VAE)
def fit_gaussian(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of codes z (N, d): the plain AE's 'prior' for sampling."""
    z = z.reshape(len(z), -1).astype(np.float64)
    return z.mean(0), np.cov(z, rowvar=False).reshape(z.shape[1], z.shape[1])


def sample_gaussian(mean: np.ndarray, cov: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n draws from N(mean, cov) (float32); cov may be singular (PSD, via eigh)."""
    rng = np.random.default_rng(seed)
    return rng.multivariate_normal(mean, cov, size=n, method="eigh").astype(np.float32)


def generation_scores(probs: np.ndarray) -> dict[str, float]:
    """How a reference classifier sees generated images (probs: (N, K) softmax outputs).

    confidence: mean max-softmax (recognisable digits score high, blends and blobs low);
    class_entropy: entropy of the predicted-class histogram / log K (1 = every class equally
    often, 0 = one class only: mode collapse); classes_hit: classes predicted at least once.
    """
    n, k = probs.shape
    counts = np.bincount(probs.argmax(1), minlength=k)
    p = counts[counts > 0] / n
    return {
        "confidence": float(probs.max(1).mean()),
        "class_entropy": float(-(p * np.log(p)).sum() / np.log(k)),
        "classes_hit": float((counts > 0).sum()),
    }


def different_class_pairs(y: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n index pairs (a, b) with y[a] != y[b], drawn by a seeded RNG (for latent interpolation)."""
    if len(np.unique(y)) < 2:
        raise ValueError("interpolation pairs need at least two classes")
    rng = np.random.default_rng(seed)
    a, b = [], []
    while len(a) < n:
        i, j = rng.integers(0, len(y), 2)
        if y[i] != y[j]:
            a.append(i)
            b.append(j)
    return np.asarray(a), np.asarray(b)
