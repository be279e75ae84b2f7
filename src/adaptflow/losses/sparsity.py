"""Sparse autoencoder penalty (seed Q2): lambda * sum_j KL(rho || rho_hat_j).

rho_hat_j is the mean activation of code unit j over the batch (sigmoid codes, so in (0, 1));
KL(rho || rho_hat) = rho log(rho / rho_hat) + (1 - rho) log((1 - rho) / (1 - rho_hat)).
"""

from __future__ import annotations

import torch


def kl_bernoulli(
    rho: float | torch.Tensor, rho_hat: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """Elementwise KL between Bernoulli(rho) and Bernoulli(rho_hat)."""
    rho_hat = rho_hat.clamp(eps, 1 - eps)
    rho = torch.as_tensor(rho, dtype=rho_hat.dtype, device=rho_hat.device)
    return rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))


def kl_sparsity(h: torch.Tensor, rho: float) -> torch.Tensor:
    """sum_j KL(rho || rho_hat_j) for codes h of shape (batch, units)."""
    return kl_bernoulli(rho, h.float().mean(0)).sum()
