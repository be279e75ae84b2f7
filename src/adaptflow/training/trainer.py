"""The one training loop every torch stage uses.

A method is an nn.Module with `update(batch, step) -> dict of loss tensors` (it calls
`step.backward(loss, optimizer)` itself, so two-optimiser methods such as GANs fit the same loop)
and `evaluate_batch(batch) -> dict of tensors` (per-batch means). `fit(..., optimizers=[...])`
hands the optimisers to the method as `method.optimizers` for the run only (they are not part of
the model that gets saved). One-optimiser methods subclass `OneOptimizerMethod`.
Losses are accumulated on the device and synced only every `log_every` steps: no per-step sync.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from adaptflow import interrupt
from adaptflow.training.checkpoint import save_checkpoint

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or inf: training stops rather than silently producing garbage."""


class StepContext:
    """What a method's `update` needs from the trainer: autocast, scaled backward, the step."""

    def __init__(self, device: torch.device, amp: bool) -> None:
        self.device = device
        self.amp = amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

    def autocast(self):
        if not self.amp:
            return nullcontext()
        return torch.autocast(device_type="cuda", dtype=torch.float16)

    def backward(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


@dataclass
class EarlyStopping:
    patience: int | None
    min_delta: float = 0.0
    best: float = math.inf
    best_epoch: int = -1
    bad_epochs: int = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record this epoch's monitored value (lower is better); True when it is a new best."""
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience


@dataclass
class History:
    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False
    seconds: float = 0.0

    def series(self, key: str) -> list[float]:
        return [e[key] for e in self.epochs if key in e]

    @property
    def train_seconds(self) -> float:
        """The epochs' own time: `seconds` minus the per-epoch callbacks (monitor evaluation,
        MLflow logging), which weigh most on the many tiny epochs of a small label budget."""
        return float(sum(self.series("epoch_seconds")))


def _to_device(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(b, device) for b in batch)
    return batch


def _check_finite(values: dict[str, float], where: str) -> None:
    bad = {k: v for k, v in values.items() if not math.isfinite(v)}
    if bad:
        raise NonFiniteLossError(
            f"non-finite loss {bad} at {where}: lower the learning rate (<stage>.lr) or check the "
            "inputs for NaN/inf"
        )


class OneOptimizerMethod(torch.nn.Module):
    """A method trained by a single optimiser on `batch_losses(batch)["loss"]`."""

    def batch_losses(self, batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def update(self, batch, step: StepContext) -> dict[str, torch.Tensor]:
        with step.autocast():
            losses = self.batch_losses(batch)
        step.backward(losses["loss"], self.optimizers[0])
        return losses

    def evaluate_batch(self, batch) -> dict[str, torch.Tensor]:
        return self.batch_losses(batch)


class Trainer:
    @classmethod
    def from_settings(cls, settings, device: torch.device, **kwargs) -> Trainer:
        """A trainer with a stage's TrainSettings (epochs, patience, min_delta, amp, log_every)."""
        knobs = {
            k: getattr(settings, k) for k in ("epochs", "patience", "min_delta", "amp", "log_every")
        }
        return cls(device, **(knobs | kwargs))

    def __init__(
        self,
        device: torch.device,
        epochs: int,
        patience: int | None = None,
        min_delta: float = 0.0,
        amp: bool = True,
        log_every: int = 20,
        monitor: str = "val_loss",
        checkpoint_dir: Path | None = None,
        progress: bool = True,
        on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
        desc: str = "train",
        restore_best: bool = True,
    ) -> None:
        """`restore_best`: end with the weights of the best monitored epoch (else the last)."""
        self.device, self.epochs, self.monitor = device, epochs, monitor
        self.patience, self.min_delta, self.restore_best = patience, min_delta, restore_best
        self.amp, self.log_every = amp, log_every
        self.checkpoint_dir, self.progress = checkpoint_dir, progress
        self.on_epoch_end, self.desc = on_epoch_end, desc

    def fit(
        self,
        method: torch.nn.Module,
        train_loader: Iterable,
        val_loader: Iterable | None = None,
        optimizers: list[torch.optim.Optimizer] | None = None,
    ) -> History:
        if optimizers is None:
            return self._fit(method, train_loader, val_loader)
        method.optimizers = optimizers
        try:
            return self._fit(method, train_loader, val_loader)
        finally:
            del method.optimizers

    def _fit(self, method, train_loader: Iterable, val_loader: Iterable | None) -> History:
        method.to(self.device)
        self.stopper = EarlyStopping(self.patience, self.min_delta)
        step = StepContext(self.device, self.amp)
        history, best_state = History(), None
        start = time.perf_counter()
        n_batches = len(train_loader) if hasattr(train_loader, "__len__") else None
        console = Console(stderr=True)
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not self.progress,
            transient=True,
        ) as bar:
            task = bar.add_task(self.desc, total=self.epochs * (n_batches or 0) or None, info="")
            for epoch in range(1, self.epochs + 1):
                t0 = time.perf_counter()
                metrics = self._train_epoch(method, train_loader, step, epoch, bar, task)
                if val_loader is not None:
                    metrics.update(
                        {f"val_{k}": v for k, v in self.evaluate(method, val_loader).items()}
                    )
                metrics["epoch_seconds"] = time.perf_counter() - t0
                history.epochs.append(metrics)
                monitored = metrics.get(self.monitor, metrics.get("loss"))
                if self.stopper.update(monitored, epoch):
                    if self.restore_best:
                        best_state = copy.deepcopy(method.state_dict())
                    history.best_epoch = epoch
                    if self.checkpoint_dir:
                        save_checkpoint(Path(self.checkpoint_dir) / "best.pt", method, epoch=epoch)
                if self.checkpoint_dir:
                    save_checkpoint(Path(self.checkpoint_dir) / "last.pt", method, epoch=epoch)
                if self.on_epoch_end:
                    self.on_epoch_end(epoch, metrics)
                shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "epoch_seconds")
                log.info("%s epoch %d/%d %s", self.desc, epoch, self.epochs, shown)
                if self.stopper.should_stop:
                    history.stopped_early = True
                    log.info(
                        "%s: early stop after epoch %d (best epoch %d)",
                        self.desc,
                        epoch,
                        history.best_epoch,
                    )
                    break
        if best_state is not None:
            method.load_state_dict(best_state)
        history.seconds = time.perf_counter() - start
        return history

    def _train_epoch(
        self, method, loader, step: StepContext, epoch: int, bar, task
    ) -> dict[str, float]:
        method.train()
        sums: dict[str, torch.Tensor] = {}
        window: dict[str, torch.Tensor] = {}
        n = 0
        for i, batch in enumerate(loader, 1):
            interrupt.check()  # a stopped pipeline ends here, its run KILLED (not mid-write)
            losses = method.update(_to_device(batch, self.device), step)
            for k, v in losses.items():
                v = v.detach().float()
                sums[k] = sums.get(k, 0.0) + v
                window[k] = window.get(k, 0.0) + v
            n += 1
            if i % self.log_every == 0:
                vals = {k: (v / self.log_every).item() for k, v in window.items()}
                _check_finite(vals, f"epoch {epoch} step {i}")
                bar.update(
                    task,
                    advance=self.log_every,
                    info=" ".join(f"{k}={v:.4f}" for k, v in vals.items()),
                )
                window = {}
        if n == 0:
            raise ValueError(
                "the training loader yielded no batch (dataset smaller than one batch?)"
            )
        bar.update(task, advance=n % self.log_every)
        means = {k: (v / n).item() for k, v in sums.items()}
        _check_finite(means, f"the end of epoch {epoch}")
        return means

    @torch.no_grad()
    def evaluate(self, method, loader) -> dict[str, float]:
        method.eval()
        sums: dict[str, torch.Tensor] = {}
        count = 0
        for batch in loader:
            batch = _to_device(batch, self.device)
            size = (batch[0] if isinstance(batch, (list, tuple)) else batch).shape[0]
            for k, v in method.evaluate_batch(batch).items():
                sums[k] = sums.get(k, 0.0) + v.detach().float() * size
            count += size
        out = {k: (v / count).item() for k, v in sums.items()}
        _check_finite(out, "validation")
        return out
