"""VAE pieces (seed Q2): z = mu + sigma * eps, loss = reconstruction + beta * KL(q(z|x) || N(0, I)),
and an importance-weighted estimate of -log p(x) (Burda et al. 2016) in nats.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I): differentiable in mu and sigma."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per example, summed over latent dims (closed form)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log p(x | z) per example, summed over pixels, for a Bernoulli decoder."""
    return (
        -F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none")
        .flatten(1)
        .sum(1)
    )


def normal_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * (math.log(2 * math.pi) + logvar + (z - mu).pow(2) / logvar.exp()).sum(-1)


@torch.no_grad()
def importance_weighted_nll(
    encode, decode_logits, x: torch.Tensor, k: int = 200, chunk: int = 50
) -> torch.Tensor:
    """-log p(x) ~= -log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x), z_i ~ q(z|x); per example, nats.

    `encode(x) -> (mu, logvar)`, `decode_logits(z) -> logits shaped like x`.
    """
    mu, logvar = encode(x)
    log_w = []
    for start in range(0, k, chunk):
        n = min(chunk, k - start)
        z = mu.unsqueeze(0) + torch.exp(0.5 * logvar).unsqueeze(0) * torch.randn(
            n, *mu.shape, device=mu.device
        )
        logits = decode_logits(z.flatten(0, 1)).view(n, *x.shape)
        log_px_z = bernoulli_log_likelihood(
            logits.flatten(0, 1), x.repeat(n, *[1] * (x.dim() - 1))
        ).view(n, -1)
        log_pz = normal_log_density(z, torch.zeros_like(z), torch.zeros_like(z))
        log_qz = normal_log_density(z, mu.unsqueeze(0), logvar.unsqueeze(0))
        log_w.append(log_px_z + log_pz - log_qz)
    log_w = torch.cat(log_w, 0)
    return -(torch.logsumexp(log_w, 0) - math.log(k))
