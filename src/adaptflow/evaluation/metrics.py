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
