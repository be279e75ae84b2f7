"""Fine-tuning a timm classifier: the last N blocks (or all of it, = training from scratch) with
layer-wise lr decay, AdamW and a per-step warm-up + cosine schedule, through the one Trainer."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from timm.scheduler import CosineLRScheduler
from torch import nn

from adaptflow.methods.transfer.linear import monitor_hook
from adaptflow.models.backbones import param_groups, set_trainable, train_mode
from adaptflow.training import History, OneOptimizerMethod, Trainer
from adaptflow.training.loaders import array_loader


def lr_schedule(
    optimizer: torch.optim.Optimizer, lr: float, warmup_steps: int, total_steps: int
) -> CosineLRScheduler:
    """Per-step schedule: linear warm-up lr*(t+1)/(W+1) for t < W, then cosine from lr to 0.

    Each group gets the schedule times its `lr_scale` (layer decay). timm's Scheduler multiplies
    by lr_scale itself, so its base must be the unscaled lr, not the group's already scaled one
    (else the decay would be applied twice).
    """
    if warmup_steps < 0 or total_steps < 1:
        raise ValueError(
            f"need warmup_steps >= 0 and total_steps >= 1, got {warmup_steps}, {total_steps}"
        )
    for group in optimizer.param_groups:
        group["initial_lr"] = lr
    return CosineLRScheduler(
        optimizer,
        t_initial=max(2, total_steps - warmup_steps),  # 1 makes timm warn (no cosine to run)
        warmup_t=warmup_steps,
        warmup_lr_init=lr / (warmup_steps + 1),
        warmup_prefix=True,  # the cosine starts at lr exactly when warm-up ends
        t_in_epochs=False,
    )


class FineTune(OneOptimizerMethod):
    """Cross-entropy on a timm classifier; frozen modules stay in eval mode while training."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.scheduler: CosineLRScheduler | None = None  # set by `finetune` for its run only
        self.updates = 0

    def forward(self, x):
        return self.model(x)

    def batch_losses(self, batch):
        x, y = batch
        logits = self.model(x)
        return {
            "loss": F.cross_entropy(logits.float(), y),
            "acc": (logits.argmax(1) == y).float().mean(),
        }

    def update(self, batch, step) -> dict[str, torch.Tensor]:
        losses = super().update(batch, step)
        self.updates += 1
        if self.scheduler is not None:
            self.scheduler.step_update(self.updates)
        return losses

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:
            train_mode(self.model)
        return self


def finetune(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    unfreeze: int | Literal["all"],
    epochs: int,
    lr: float,
    layer_decay: float,
    warmup_steps: int,
    weight_decay: float,
    batch_size: int,
    seed: int,
    device,
    progress: bool = False,
    monitor: tuple[np.ndarray, np.ndarray] | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    desc: str = "finetune",
) -> tuple[FineTune, History]:
    """Train the head and the last `unfreeze` blocks of `model` for a fixed `epochs`.

    No selection: the last epoch is kept. `monitor`: (images, labels) evaluated after every epoch
    (`monitor_loss`, `monitor_acc` in the history), for curves only. Scratch training is this on a
    freshly built model with unfreeze="all".
    """
    device = torch.device(device)
    set_trainable(model, unfreeze)
    method = FineTune(model)
    optimizer = torch.optim.AdamW(param_groups(model, lr, weight_decay, layer_decay))
    total_steps = epochs * math.ceil(len(x) / batch_size)
    method.scheduler = lr_schedule(optimizer, lr, warmup_steps, total_steps)
    trainer = Trainer(
        device, epochs, patience=None, progress=progress, desc=desc, restore_best=False
    )
    trainer.on_epoch_end = monitor_hook(trainer, method, monitor, on_epoch_end)
    try:
        history = trainer.fit(
            method,
            array_loader(x, y, batch_size=batch_size, shuffle=True, seed=seed),
            optimizers=[optimizer],
        )
    finally:
        method.scheduler = None
    return method, history
