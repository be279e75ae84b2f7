"""A small reference digit classifier: the evaluator of generated images (the role an Inception
net plays for FID/IS). Trained in the `ae` stage on the training split only, selected on the
validation split; its own test accuracy is reported beside every score it produces."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adaptflow.training import History, OneOptimizerMethod, Trainer
from adaptflow.training.loaders import array_loader


class DigitClassifier(OneOptimizerMethod):
    """conv(16) - pool - conv(32) - pool - linear(K) (or a hidden layer before it)."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: int | None = None):
        """`hidden`: a ReLU layer of that size before the output: the compact features the
        `gan` stage's Fréchet distance is computed on (`features`)."""
        super().__init__()
        c, h, w = input_shape
        flat = 32 * (h // 4) * (w // 4)
        convs = [  # created first: the parameters draw the seeded RNG in this order
            nn.Conv2d(c, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        ]
        if hidden:
            head = [nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)]
        else:
            head = [nn.Linear(flat, num_classes)]
        self.net = nn.Sequential(*convs, *head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def batch_losses(self, batch) -> dict[str, torch.Tensor]:
        x, y = batch
        logits = self(x)
        return {
            "loss": F.cross_entropy(logits.float(), y),
            "acc": (logits.argmax(1) == y).float().mean(),
        }

    def fit(self, x, y, x_val, y_val, settings, device: torch.device, seed: int) -> History:
        trainer = Trainer.from_settings(settings, device, progress=False, desc="classifier")
        return trainer.fit(
            self,
            array_loader(x, y, batch_size=settings.batch_size, shuffle=True, seed=seed),
            array_loader(x_val, y_val, batch_size=1000, shuffle=False),
            optimizers=[torch.optim.Adam(self.parameters(), lr=settings.lr)],
        )

    @torch.no_grad()
    def predict_proba(self, x: np.ndarray | torch.Tensor, batch_size: int = 1000) -> np.ndarray:
        """Softmax probabilities (N, K) of images (N, C, H, W) in [0, 1]."""
        self.eval()
        device = next(self.parameters()).device
        x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        out = [
            torch.softmax(self(x[i : i + batch_size].to(device)).float(), 1).cpu()
            for i in range(0, len(x), batch_size)
        ]
        return torch.cat(out).numpy()

    @torch.no_grad()
    def features(self, x: np.ndarray | torch.Tensor, batch_size: int = 1000) -> np.ndarray:
        """The activations feeding the output layer (N, D), float64 for the Fréchet distance."""
        self.eval()
        device = next(self.parameters()).device
        x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        body = self.net[:-1]
        out = [
            body(x[i : i + batch_size].to(device)).float().cpu()
            for i in range(0, len(x), batch_size)
        ]
        return torch.cat(out).double().numpy()

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float((self.predict_proba(x).argmax(1) == y).mean())
