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
    x: np.ndarray,
    y: np.ndarray,
    settings,
    device,
    seed: int,
    progress: bool = False,
    *,
    select: tuple[np.ndarray, np.ndarray] | None = None,
    monitor: tuple[np.ndarray, np.ndarray] | None = None,
    on_epoch_end=None,
    desc: str = "fine-tune",
) -> tuple[FineTuner, History]:
    """End-to-end training with labels; the same optimiser and epochs for every arm.

    `select`: labelled images inside the run's label budget; the epoch with the lowest loss on
    them is kept (`settings.patience` may stop early). None: a fixed budget of `settings.epochs`,
    the last epoch is kept, nothing is selected. `monitor`: labelled images evaluated after every
    epoch (`monitor_loss`, `monitor_acc` in the history, for curves); they never select: they are
    not the trainer's validation set and are added only after the trainer's epoch bookkeeping.
    """
    model = FineTuner(net)
    extra = {} if select is not None else {"patience": None}
    trainer = Trainer.from_settings(
        settings,
        device,
        progress=progress,
        on_epoch_end=None,
        desc=desc,
        restore_best=select is not None,
        **extra,
    )
    monitor_loader = (
        array_loader(*monitor, batch_size=1000, shuffle=False) if monitor is not None else None
    )

    def after_epoch(epoch: int, metrics: dict[str, float]) -> None:
        if monitor_loader is not None:  # the same dict the history holds: curves land there
            metrics.update(
                {f"monitor_{k}": v for k, v in trainer.evaluate(model, monitor_loader).items()}
            )
        if on_epoch_end:
            on_epoch_end(epoch, metrics)

    trainer.on_epoch_end = after_epoch
    history = trainer.fit(
        model,
        array_loader(x, y, batch_size=settings.batch_size, shuffle=True, seed=seed),
        array_loader(*select, batch_size=1000, shuffle=False) if select is not None else None,
        optimizers=[
            torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        ],
    )
    return model, history
