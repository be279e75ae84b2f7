"""Plain autoencoder (seed Q1): h = f(W_e x + b_e), x_hat = g(W_d h + b_d), minimise L(x, x_hat)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from adaptflow.losses.reconstruction import bce_with_logits, mse
from adaptflow.methods.ae.base import TorchAE
from adaptflow.methods.ae.registry import AE_METHODS
from adaptflow.models.mlp import Decoder, Encoder


@AE_METHODS.register("ae")
class Autoencoder(TorchAE):
    name = "ae"

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)
        loss: Literal["mse", "bce"] = Field("mse", description="training loss; both are reported")
        code_activation: Literal["none", "relu", "sigmoid", "tanh"] = Field(
            "none", description="f applied to the code h"
        )

    def __init__(self, input_shape, hidden, code_size: int, options: Config | None = None):
        super().__init__()
        self.options = options or self.Config()
        self.encoder = Encoder(input_shape, hidden, code_size, self.options.code_activation)
        self.decoder = Decoder(input_shape, hidden, code_size)

    def fit(self, x_train, x_val, ctx):
        # start the decoder at the mean image (logit of the pixel means) instead of at 0.5
        # everywhere: it skips the plateau where the net only learns the average digit
        mean = torch.from_numpy(x_train.mean(0)).flatten().clamp(1e-3, 1 - 1e-3)
        with torch.no_grad():
            self.decoder.net[-2].bias.copy_(torch.logit(mean))
        return super().fit(x_train, x_val, ctx)

    def encode(self, x):
        return self.encoder(x)

    def decode_logits(self, h):
        return self.decoder(h)

    def _losses(self, x):
        logits = self.decode_logits(self.encode(x))
        x_hat = logits.float().sigmoid()
        return {"mse": mse(x_hat, x), "bce": bce_with_logits(logits, x)}

    def update(self, batch, step):
        (x,) = batch
        with step.autocast():
            losses = self._losses(x)
        losses["loss"] = losses[self.options.loss]
        step.backward(losses["loss"], self.optimizers[0])
        return losses

    def evaluate_batch(self, batch):
        (x,) = batch
        losses = self._losses(x)
        losses["loss"] = losses[self.options.loss]
        return losses
