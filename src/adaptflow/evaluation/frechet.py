"""Fréchet distance between two sets of features (the formula of FID, Heusel et al. 2017).

    d² = ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^½)

— the 2-Wasserstein distance between the Gaussians fitted to the two sets. The `gan` stage
computes it on the features of a digit classifier trained in the stage: that is *not* FID,
whose features come from an ImageNet Inception net (torchmetrics / torch-fidelity download its
weights, which nothing here may do); numbers are comparable only within this project.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased) of `features` (n, d), in float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"features must be (n >= 2, d), got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """d² between feature sets a (n, d) and b (m, d). A singular product of covariances (fewer
    samples than dimensions) gets `eps` on both diagonals, as the reference FID code does."""
    mu1, s1 = gaussian_stats(a)
    mu2, s2 = gaussian_stats(b)
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature widths differ: {mu1.shape[0]} vs {mu2.shape[0]}")
    with warnings.catch_warnings():  # a singular product is expected with n < d: handled here
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            offset = np.eye(len(s1)) * eps
            covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        # round-off (and a singular product: n < d) gives small imaginary parts; only the
        # diagonal enters the trace, and a large imaginary part there is a bug (the reference
        # FID code's check)
        diag = np.diagonal(covmean).imag
        if not np.allclose(diag, 0, atol=1e-3 * max(1.0, np.abs(np.diagonal(covmean).real).max())):
            raise ValueError(f"sqrt of Σ₁Σ₂ has an imaginary part {np.abs(diag).max():.3g}")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean), 0.0))
