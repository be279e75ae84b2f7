"""Training any classifier module through the shared trainer, and timing its steps."""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adaptflow.training import History, OneOptimizerMethod, Trainer
from adaptflow.training.loaders import array_loader


class Classifier(OneOptimizerMethod):
    """Cross-entropy on the logits of `model`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)

    def batch_losses(self, batch):
        x, y = batch
        logits = self.model(x)
        return {
            "loss": F.cross_entropy(logits.float(), y),
            "acc": (logits.argmax(1) == y).float().mean(),
        }


def train_classifier(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    seed: int,
    device,
    amp: bool = True,
    log_every: int = 20,
    progress: bool = False,
    on_epoch_end=None,
    desc: str = "classifier",
) -> tuple[Classifier, History]:
    """AdamW for a fixed number of epochs (cosine decay to 0); no selection, the last is kept."""
    method = Classifier(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    loader = array_loader(x, y, batch_size=batch_size, shuffle=True, seed=seed)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)

    def end_of_epoch(epoch: int, m: dict[str, float]) -> None:
        schedule.step()
        if on_epoch_end is not None:
            on_epoch_end(epoch, m)

    trainer = Trainer(
        torch.device(device),
        epochs,
        amp=amp,
        log_every=log_every,
        monitor="loss",
        restore_best=False,
        progress=progress,
        on_epoch_end=end_of_epoch,
        desc=desc,
    )
    history = trainer.fit(method, loader, optimizers=[optimizer])
    return method, history


def resample(x: np.ndarray, length: int) -> np.ndarray:
    """Sequences (N, C, L) linearly interpolated to `length` steps (the same curve, finer or
    coarser): a longer input with the same content, for timing."""
    n, c, steps = x.shape
    src = np.linspace(0.0, 1.0, steps)
    dst = np.linspace(0.0, 1.0, length)
    flat = x.reshape(n * c, steps)
    out = np.stack([np.interp(dst, src, row) for row in flat])
    return out.reshape(n, c, length).astype(np.float32)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_times(
    model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int, batches: int, device
) -> tuple[float, float]:
    """Median seconds of one training step (forward, backward, AdamW update) and of one forward
    pass (eval, no grad) on `batch_size` examples, over `batches` timed batches after one
    untimed warm-up of each."""
    device = torch.device(device)
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    xb = torch.from_numpy(x[:batch_size]).to(device)
    yb = torch.from_numpy(y[:batch_size]).to(device)
    train, forward = [], []
    model.train()
    for i in range(batches + 1):
        _sync(device)
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(xb).float(), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(device)
        if i:
            train.append(time.perf_counter() - t0)
    model.eval()
    with torch.no_grad():
        for i in range(batches + 1):
            _sync(device)
            t0 = time.perf_counter()
            model(xb)
            _sync(device)
            if i:
                forward.append(time.perf_counter() - t0)
    return float(np.median(train)), float(np.median(forward))


def median_ms(rows: list[dict], length: int, model: str, key: str) -> float:
    """Median over repeats of the timing `key` (seconds: `step_s`, `forward_s`) of `model` at
    `length` in timing rows, in milliseconds."""
    return 1000 * float(
        np.median([r[key] for r in rows if r["length"] == length and r["model"] == model])
    )
