"""A linear head trained in torch on pre-computed (frozen) features, through the one Trainer."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adaptflow.training import History, OneOptimizerMethod, Trainer
from adaptflow.training.loaders import array_loader

EVAL_BATCH = 512


class LinearHead(OneOptimizerMethod):
    """Cross-entropy on logits of one nn.Linear over features f."""

    def __init__(self, dim: int, n_classes: int):
        super().__init__()
        self.linear = nn.Linear(dim, n_classes)

    def forward(self, f):
        return self.linear(f)

    def batch_losses(self, batch):
        f, y = batch
        logits = self(f)
        return {
            "loss": F.cross_entropy(logits.float(), y),
            "acc": (logits.argmax(1) == y).float().mean(),
        }


@torch.no_grad()
def accuracy(module: nn.Module, x: np.ndarray, y: np.ndarray, device, batch_size=EVAL_BATCH):
    """Share of argmax(module(x)) == y, in eval mode, batched."""
    module.eval().to(device)
    pred = [
        module(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])).to(device))
        .argmax(1)
        .cpu()
        for i in range(0, len(x), batch_size)
    ]
    return float((torch.cat(pred).numpy() == y).mean())


def monitor_hook(
    trainer: Trainer,
    method: nn.Module,
    monitor: tuple[np.ndarray, np.ndarray] | None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None,
) -> Callable[[int, dict[str, float]], None]:
    """After each epoch: monitor_loss/monitor_acc into the epoch's metrics (curves, never a
    selection: the trainer has already done its bookkeeping), then the caller's callback."""
    loader = (
        array_loader(*monitor, batch_size=EVAL_BATCH, shuffle=False)
        if monitor is not None
        else None
    )

    def after_epoch(epoch: int, metrics: dict[str, float]) -> None:
        if loader is not None:  # the same dict the history holds: curves land there
            metrics.update({f"monitor_{k}": v for k, v in trainer.evaluate(method, loader).items()})
        if on_epoch_end:
            on_epoch_end(epoch, metrics)

    return after_epoch


def train_head(
    f_train: np.ndarray,
    y_train: np.ndarray,
    n_classes: int,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    weight_decay: float,
    seed: int,
    device,
    progress: bool = False,
    monitor: tuple[np.ndarray, np.ndarray] | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> tuple[nn.Linear, History]:
    """A new nn.Linear(D, n_classes) trained with Adam for a fixed `epochs` (last epoch kept).

    `monitor`: (features, labels) evaluated after every epoch into the history; selects nothing.
    """
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):  # a seeded head without touching the global RNG
        torch.manual_seed(seed)
        method = LinearHead(f_train.shape[1], n_classes)
    trainer = Trainer(
        device, epochs, patience=None, progress=progress, desc="head", restore_best=False
    )
    trainer.on_epoch_end = monitor_hook(trainer, method, monitor, on_epoch_end)
    history = trainer.fit(
        method,
        array_loader(f_train, y_train, batch_size=batch_size, shuffle=True, seed=seed),
        optimizers=[torch.optim.Adam(method.parameters(), lr=lr, weight_decay=weight_decay)],
    )
    return method.linear, history
