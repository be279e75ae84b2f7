"""Sparse autoencoder (seed Q2): sigmoid code, L = recon + lambda * sum_j KL(rho || rho_hat_j)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from adaptflow.losses.sparsity import kl_sparsity
from adaptflow.methods.ae.base import Options, TorchAE
from adaptflow.methods.ae.registry import AE_METHODS


@AE_METHODS.register("sparse")
class SparseAutoencoder(TorchAE):
    name = "sparse"
    code_activation = "sigmoid"  # rho_hat_j must be a mean firing probability in (0, 1)

    class Config(Options):
        rho: float = Field(0.05, gt=0, lt=1, description="target mean activation of each code unit")
        lam: float = Field(0.1, ge=0, description="weight of the KL sparsity penalty")
        loss: Literal["mse", "bce"] = "mse"

    def training_losses(self, x_in, x):
        h = self.encode(x_in)
        losses = self.reconstruction(self.decode_logits(h), x)
        losses["kl_sparsity"] = kl_sparsity(h, self.options.rho)
        losses["mean_activation"] = h.float().mean()
        losses["loss"] = losses[self.options.loss] + self.options.lam * losses["kl_sparsity"]
        return losses
