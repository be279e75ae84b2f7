"""Variational autoencoder (seed Q2): the encoder gives mu and log sigma^2, z = mu + sigma * eps,
loss = reconstruction + beta * KL(q(z|x) || N(0, I)) (Kingma & Welling 2014).

Bernoulli decoder: the reconstruction term is -log p(x|z) summed over pixels (nats per image).
`binarize: dynamic` (the default) trains on binary images re-sampled every batch, x_b ~ Bernoulli(x)
(the protocol of the binarised-MNIST literature, e.g. Burda et al. 2016), so -log p(x) in nats is
comparable with published numbers (~89-90 nats for an MLP VAE on full MNIST); `none` fits the
Bernoulli likelihood to grey levels (a valid loss, but its nats are not comparable).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from adaptflow.losses.reconstruction import mse
from adaptflow.losses.vae import (
    bernoulli_log_likelihood,
    importance_weighted_nll,
    kl_normal,
    reparameterize,
)
from adaptflow.methods.ae.base import Options, TorchAE
from adaptflow.methods.ae.registry import AE_METHODS


@AE_METHODS.register("vae")
class VAE(TorchAE):
    name = "vae"
    generative = True

    class Config(Options):
        beta: float = Field(1.0, ge=0, description="weight of the KL term (1: the ELBO)")
        binarize: Literal["dynamic", "none"] = Field(
            "dynamic", description="dynamic: train on x ~ Bernoulli(pixels), re-sampled per batch"
        )

    def __init__(self, spec, options=None):
        super().__init__(spec, options, encoder_out=2 * spec.code_size)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).float().chunk(2, dim=-1)
        return mu, logvar.clamp(-12, 8)  # keeps exp() finite early in training

    def encode(self, x):
        return self.posterior(x)[0]  # the code used for probes/plots is the posterior mean

    def fit(self, x_train: np.ndarray, x_val: np.ndarray, ctx):
        if self.options.binarize == "dynamic":  # one fixed binarisation of the validation set
            g = torch.Generator().manual_seed(ctx.seed)
            x_val = (torch.rand(x_val.shape, generator=g) < torch.from_numpy(x_val)).float().numpy()
        return super().fit(x_train, x_val, ctx)

    def batch_losses(self, batch) -> dict[str, torch.Tensor]:
        (x,) = batch
        if self.training and self.options.binarize == "dynamic":
            x = torch.bernoulli(x.float()).to(x.dtype)
        return self.training_losses(x, x)

    def training_losses(self, x_in, x):
        mu, logvar = self.posterior(x_in)
        logits = self.decode_logits(reparameterize(mu, logvar))
        recon = -bernoulli_log_likelihood(logits, x).mean()
        kl = kl_normal(mu, logvar).mean()
        return {
            "recon": recon,
            "kl": kl,
            "neg_elbo": recon + kl,
            "mse": mse(logits.float().sigmoid(), x),
            "loss": recon + self.options.beta * kl,
        }

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        device = next(self.parameters()).device
        z = torch.randn(n, self.spec.code_size, generator=generator).to(device)
        return torch.sigmoid(self.decode_logits(z))

    @torch.no_grad()
    def negative_elbo(self, x: torch.Tensor) -> torch.Tensor:
        """-ELBO per example (one posterior sample), nats."""
        mu, logvar = self.posterior(x)
        logits = self.decode_logits(reparameterize(mu, logvar))
        return -bernoulli_log_likelihood(logits, x) + kl_normal(mu, logvar)

    @torch.no_grad()
    def nll(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Importance-weighted -log p(x) per example (k samples), nats; <= -ELBO in expectation."""
        return importance_weighted_nll(self.posterior, self.decode_logits, x, k)
