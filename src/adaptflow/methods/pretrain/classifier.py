"""Supervised fine-tuning of a (pretrained or random) deep net: cross-entropy, accuracy logged."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from adaptflow.models.stacked import DeepClassifier
from adaptflow.training import History, OneOptimizerMethod, Trainer
from adaptflow.training.loaders import array_loader


class FineTuner(OneOptimizerMethod):
    def __init__(self, net: DeepClassifier):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)

    def batch_losses(self, batch):
        x, y = batch
        logits = self.net(x)
        return {
            "loss": F.cross_entropy(logits.float(), y),
            "acc": (logits.argmax(1) == y).float().mean(),
        }

    @torch.no_grad()
    def accuracy(self, x: np.ndarray, y: np.ndarray, device) -> float:
        self.eval()
        pred = torch.cat(
            [
                self.net(torch.from_numpy(x[i : i + 1000]).to(device)).argmax(1).cpu()
                for i in range(0, len(x), 1000)
            ]
        )
        return float((pred.numpy() == y).mean())


def fine_tune(
    net: DeepClassifier,
    x,
    y,
    x_val,
    y_val,
    settings,
    device,
    seed: int,
    progress: bool,
    on_epoch_end=None,
    desc: str = "fine-tune",
) -> tuple[FineTuner, History]:
    """End-to-end training with labels; the same optimiser and epochs for every arm."""
    model = FineTuner(net)
    trainer = Trainer.from_settings(
        settings, device, progress=progress, on_epoch_end=on_epoch_end, desc=desc
    )
    history = trainer.fit(
        model,
        array_loader(x, y, batch_size=settings.batch_size, shuffle=True, seed=seed),
        array_loader(x_val, y_val, batch_size=1000, shuffle=False),
        optimizers=[
            torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        ],
    )
    return model, history
