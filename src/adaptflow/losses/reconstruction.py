"""Reconstruction losses of the seed's Q1: L = ||x - x_hat||^2 and binary cross-entropy.

Both are averaged over pixels and examples (a scale choice: per-pixel numbers are comparable
across image sizes); `per_example=True` gives one value per image (anomaly scores).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mse(x_hat: torch.Tensor, x: torch.Tensor, per_example: bool = False) -> torch.Tensor:
    err = (x_hat - x).pow(2).flatten(1).mean(1)
    return err if per_example else err.mean()


def bce_with_logits(
    logits: torch.Tensor, x: torch.Tensor, per_example: bool = False
) -> torch.Tensor:
    """-sum[x log x_hat + (1-x) log(1-x_hat)] with x_hat = sigmoid(logits), computed stably."""
    err = (
        F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none")
        .flatten(1)
        .mean(1)
    )
    return err if per_example else err.mean()


def bce(
    x_hat: torch.Tensor, x: torch.Tensor, per_example: bool = False, eps: float = 1e-6
) -> torch.Tensor:
    """BCE of probabilities (for reconstructions that are not logits, e.g. PCA clipped to [0,1])."""
    x_hat = x_hat.clamp(eps, 1 - eps)
    err = F.binary_cross_entropy(x_hat, x, reduction="none").flatten(1).mean(1)
    return err if per_example else err.mean()
