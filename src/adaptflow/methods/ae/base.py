"""The surface every autoencoder-family method shares, torch or not (DomainBed-style).

    method = AE_METHODS.get(name)(spec: NetSpec, options: Method.Config)
    method.fit(x_train, x_val, ctx) -> History | None
    method.encode_np(x) -> codes;  method.reconstruct_np(x) -> x_hat in [0, 1]

Torch methods implement `training_losses(x_in, x_target) -> dict` (with the key 'loss');
`update` / `evaluate_batch` (what the Trainer calls) are shared here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from adaptflow.losses.reconstruction import bce_with_logits, mse
from adaptflow.models.factory import NetSpec, build_decoder, build_encoder
from adaptflow.training import History, OneOptimizerMethod, Trainer
from adaptflow.training.loaders import array_loader


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class FitContext:
    """What a method needs to train: the stage's trainer settings, device and callbacks."""

    settings: Any  # config.TrainSettings
    device: torch.device
    seed: int
    progress: bool = True
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None
    checkpoint_dir: Path | None = None
    desc: str | None = None


class TorchAE(OneOptimizerMethod):
    """Encoder -> code -> decoder (logits); x_hat = sigmoid(logits) (images live in [0, 1])."""

    Config: type[BaseModel] = Options
    is_torch = True
    code_activation = "none"

    def __init__(
        self, spec: NetSpec, options: BaseModel | None = None, encoder_out: int | None = None
    ):
        super().__init__()
        self.spec = spec
        self.options = options if options is not None else self.Config()
        self.encoder = build_encoder(spec, encoder_out, self._code_activation())
        self.decoder = build_decoder(spec)

    def _code_activation(self) -> str:
        return getattr(self.options, "code_activation", self.code_activation)

    # --- the model
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode_logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x -> x_hat in [0, 1]: what the registered MLflow model computes."""
        return torch.sigmoid(self.decode_logits(self.encode(x)))

    # --- training
    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def reconstruction(self, logits: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"mse": mse(logits.float().sigmoid(), x), "bce": bce_with_logits(logits, x)}

    def training_losses(self, x_in: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
        losses = self.reconstruction(self.decode_logits(self.encode(x_in)), x)
        losses["loss"] = losses[getattr(self.options, "loss", "mse")]
        return losses

    def batch_losses(self, batch) -> dict[str, torch.Tensor]:
        (x,) = batch
        return self.training_losses(self.corrupt(x), x)

    def configure_optimizers(self, settings) -> list[torch.optim.Optimizer]:
        return [
            torch.optim.Adam(self.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        ]

    def fit(self, x_train: np.ndarray, x_val: np.ndarray, ctx: FitContext) -> History:
        # start the decoder at the mean image (logit of pixel means) rather than 0.5 everywhere:
        # it skips the plateau where the net only learns the average digit
        mean = torch.from_numpy(x_train.mean(0)).flatten().clamp(1e-3, 1 - 1e-3)
        bias = self.decoder.output_bias
        with torch.no_grad():
            if bias.numel() == mean.numel():
                bias.copy_(torch.logit(mean))
            else:  # conv decoder: one bias per channel
                bias.copy_(torch.logit(mean.view(bias.numel(), -1).mean(1)))
        s = ctx.settings
        trainer = Trainer.from_settings(
            s,
            ctx.device,
            checkpoint_dir=ctx.checkpoint_dir,
            progress=ctx.progress,
            on_epoch_end=ctx.on_epoch_end,
            desc=ctx.desc or self.name,
        )
        return trainer.fit(
            self,
            array_loader(x_train, batch_size=s.batch_size, shuffle=True, seed=ctx.seed),
            array_loader(x_val, batch_size=s.batch_size * 4, shuffle=False),
            optimizers=self.configure_optimizers(s),
        )

    # --- numpy helpers used by the stage's evaluation
    @torch.no_grad()
    def _map(self, fn, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        self.eval()
        device = next(self.parameters()).device
        out = [
            fn(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])).to(device))
            .float()
            .cpu()
            for i in range(0, len(x), batch_size)
        ]
        return torch.cat(out).numpy()

    def encode_np(self, x: np.ndarray) -> np.ndarray:
        return self._map(self.encode, x)

    def reconstruct_np(self, x: np.ndarray) -> np.ndarray:
        return self._map(self.forward, x)
