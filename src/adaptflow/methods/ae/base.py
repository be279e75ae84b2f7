"""The surface every autoencoder-family method shares, torch or not (DomainBed-style)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch.utils.data import DataLoader, TensorDataset

from adaptflow.training import History, Trainer


class NoOptions(BaseModel):
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


def loader(x: np.ndarray, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(
        TensorDataset(torch.from_numpy(x)),
        batch_size=batch_size,
        shuffle=shuffle,
        generator=g,
        drop_last=False,
    )


class TorchAE(torch.nn.Module):
    """Base for torch autoencoders: subclasses define encode/decode_logits and `update`."""

    Config: type[BaseModel] = NoOptions
    is_torch = True

    def configure_optimizers(self, settings) -> list[torch.optim.Optimizer]:
        return [
            torch.optim.Adam(self.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        ]

    def fit(self, x_train: np.ndarray, x_val: np.ndarray, ctx: FitContext) -> History:
        s = ctx.settings
        self.optimizers = self.configure_optimizers(s)
        trainer = Trainer(
            ctx.device,
            epochs=s.epochs,
            patience=s.patience,
            min_delta=s.min_delta,
            amp=s.amp,
            log_every=s.log_every,
            checkpoint_dir=ctx.checkpoint_dir,
            progress=ctx.progress,
            on_epoch_end=ctx.on_epoch_end,
            desc=self.name,
        )
        try:
            return trainer.fit(
                self,
                loader(x_train, s.batch_size, True, ctx.seed),
                loader(x_val, s.batch_size * 4, False),
            )
        finally:
            del self.optimizers  # not part of the model that gets pickled into MLflow

    @torch.no_grad()
    def _map(self, fn, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        self.eval()
        device = next(self.parameters()).device
        out = [
            fn(torch.from_numpy(x[i : i + batch_size]).to(device)).float().cpu()
            for i in range(0, len(x), batch_size)
        ]
        return torch.cat(out).numpy()

    def encode_np(self, x: np.ndarray) -> np.ndarray:
        return self._map(self.encode, x)

    def reconstruct_np(self, x: np.ndarray) -> np.ndarray:
        return self._map(lambda b: torch.sigmoid(self.decode_logits(self.encode(b))), x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x -> x_hat in [0, 1]: what the registered MLflow model computes."""
        return torch.sigmoid(self.decode_logits(self.encode(x)))
