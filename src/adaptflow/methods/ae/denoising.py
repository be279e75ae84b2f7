"""Denoising autoencoder (seed Q2): L = ||x - D(E(x_tilde))||^2, x_tilde a corrupted copy of x."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from adaptflow.losses.noise import corrupt
from adaptflow.methods.ae.base import Options, TorchAE
from adaptflow.methods.ae.registry import AE_METHODS


@AE_METHODS.register("denoising")
class DenoisingAutoencoder(TorchAE):
    name = "denoising"

    class Config(Options):
        noise: Literal["gaussian", "masking"] = "gaussian"
        sigma: float = Field(0.3, gt=0, le=2, description="std of Gaussian noise")
        p: float = Field(0.3, gt=0, lt=1, description="masking: probability a pixel is dropped")
        loss: Literal["mse", "bce"] = "mse"

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        level = self.options.sigma if self.options.noise == "gaussian" else self.options.p
        return corrupt(x, self.options.noise, level)
