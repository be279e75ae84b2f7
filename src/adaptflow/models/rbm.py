"""Bernoulli-Bernoulli restricted Boltzmann machine trained with contrastive divergence (CD-k),
the layer of a deep belief net (Hinton et al. 2006)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RBM(nn.Module):
    def __init__(self, n_visible: int, n_hidden: int):
        super().__init__()
        self.W = nn.Parameter(0.01 * torch.randn(n_hidden, n_visible))
        self.b_v = nn.Parameter(torch.zeros(n_visible))
        self.b_h = nn.Parameter(torch.zeros(n_hidden))

    def hidden_probs(self, v: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(F.linear(v, self.W, self.b_h))

    def visible_probs(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(F.linear(h, self.W.t(), self.b_v))

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) = -b_v.v - sum_j softplus(W_j.v + b_h_j); p(v) is proportional to exp(-F(v))."""
        return -(v @ self.b_v) - F.softplus(F.linear(v, self.W, self.b_h)).sum(-1)

    @torch.no_grad()
    def gibbs_chain(self, v0: torch.Tensor, k: int) -> torch.Tensor:
        """k steps of block Gibbs sampling v -> h -> v, started at the data (CD-k)."""
        v = v0
        for _ in range(k):
            h = torch.bernoulli(self.hidden_probs(v))
            v = torch.bernoulli(self.visible_probs(h))
        return v

    def cd_loss(self, v0: torch.Tensor, k: int) -> torch.Tensor:
        """A surrogate whose gradient is the CD-k estimate of -d log p(v0)/d theta:
        F(v0) - F(v_k), with v_k held fixed."""
        vk = self.gibbs_chain(v0, k)
        return self.free_energy(v0).mean() - self.free_energy(vk).mean()
