"""Sparse autoencoder (seed Q2): sigmoid code, L = ||x - x_hat||^2 + lambda * sum_j KL(rho || rho_hat_j).

Scale convention (the seed's formula, literally): the reconstruction term is the squared error
*summed over pixels* (mean over the images of a batch), and the penalty is summed over the code
units, so lambda weighs one image's total error against the whole code's KL. (The plain AE
reports and trains on the per-pixel mean; here it is multiplied by the number of pixels.)
With `loss: bce` the summed cross-entropy replaces the squared error.
"""

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
        lam: float = Field(
            1.0, ge=0, description="weight of sum_j KL against the per-image summed squared error"
        )
        loss: Literal["mse", "bce"] = "mse"

    def training_losses(self, x_in, x):
        h = self.encode(x_in)
        losses = self.reconstruction(self.decode_logits(h), x)
        pixels = x[0].numel()
        losses["recon_sum"] = losses[self.options.loss] * pixels  # per-pixel mean -> per-image sum
        losses["kl_sparsity"] = kl_sparsity(h, self.options.rho)
        losses["mean_activation"] = h.float().mean()
        losses["loss"] = losses["recon_sum"] + self.options.lam * losses["kl_sparsity"]
        return losses
