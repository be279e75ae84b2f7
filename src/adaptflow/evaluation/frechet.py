"""Fréchet distance between two sets of features (the formula of FID, Heusel et al. 2017).

    d² = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^½)

— the 2-Wasserstein distance between the Gaussians fitted to the two sets. The `gan` stage
computes it on the features of a digit classifier trained in the stage: that is *not* FID,
whose features come from an ImageNet Inception net (torchmetrics / torch-fidelity download its
weights, which nothing here may do); numbers are comparable only within this project.
"""

from __future__ import annotations

import numpy as np


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased) of `features` (n, d), in float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"features must be (n >= 2, d), got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    """The symmetric square root of a covariance (eigenvalues below 0 from round-off -> 0)."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """d² between feature sets a (n, d) and b (m, d).

    Tr (Σ₁Σ₂)^½ = Tr (Σ₁^½ Σ₂ Σ₁^½)^½: the same trace from a symmetric positive semi-definite
    matrix, so its eigenvalues are real and >= 0 (up to round-off, clipped) and no complex
    `sqrtm` of the non-symmetric Σ₁Σ₂ is needed, also when n < d makes the covariances singular.
    """
    mu1, s1 = gaussian_stats(a)
    mu2, s2 = gaussian_stats(b)
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature widths differ: {mu1.shape[0]} vs {mu2.shape[0]}")
    root1 = _sqrt_psd(s1)
    inner = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(eig, 0, None)).sum())
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean, 0.0))
