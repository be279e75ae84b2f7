"""Plain autoencoder (seed Q1): h = f(W_e x + b_e), x_hat = g(W_d h + b_d), minimise L(x, x_hat)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from adaptflow.methods.ae.base import Options, TorchAE
from adaptflow.methods.ae.registry import AE_METHODS


@AE_METHODS.register("ae")
class Autoencoder(TorchAE):
    name = "ae"

    class Config(Options):
        loss: Literal["mse", "bce"] = Field("mse", description="training loss; both are reported")
        code_activation: Literal["none", "relu", "sigmoid", "tanh"] = Field(
            "none", description="f applied to the code h"
        )
