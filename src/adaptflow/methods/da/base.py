"""The surface every domain-adaptation method shares (DomainBed's): a featurizer and a linear
classifier; `update((x_s, y_s, x_t), step) -> dict of losses`; `predict(x)`. A method adds its
alignment term to the source cross-entropy in `adaptation_loss`; the trainer's step gives it
the training progress p ∈ [0, 1] for schedules (DANN's λ)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from adaptflow.registry import Registry

DA_METHODS: Registry[type[DAMethod]] = Registry("da method")


class DAConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    weight: float = Field(1.0, ge=0, description="weight of the adaptation term")


class DAMethod(nn.Module):
    """Source cross-entropy + weight × adaptation_loss on the (source, target) batch pair."""

    Config = DAConfig
    uses_target_labels = False  # only the oracle may read y_t (never used to select anything)

    def __init__(self, featurizer: nn.Module, n_classes: int, config: BaseModel, total_steps: int):
        super().__init__()
        self.featurizer = featurizer
        self.classifier = nn.Linear(featurizer.dim, n_classes)
        self.config = config
        self.total_steps = max(1, total_steps)
        self.steps = 0

    @property
    def progress(self) -> float:
        return min(1.0, self.steps / self.total_steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predict(x)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.featurizer(x))

    def adaptation_loss(self, f_s, f_t, logits_s, logits_t) -> dict[str, torch.Tensor]:
        """The method's own terms (name -> tensor); "align" is added to the loss with `weight`."""
        return {}

    def batch_losses(self, batch) -> dict[str, torch.Tensor]:
        x_s, y_s, x_t = batch[:3]
        f = self.featurizer(torch.cat([x_s, x_t]))
        f_s, f_t = f[: len(x_s)], f[len(x_s) :]
        logits = self.classifier(f)
        logits_s, logits_t = logits[: len(x_s)], logits[len(x_s) :]
        out = {"cls": F.cross_entropy(logits_s.float(), y_s)}
        out |= self.adaptation_loss(f_s, f_t, logits_s, logits_t)
        out["loss"] = out["cls"] + self.config.weight * out.get("align", 0.0)
        return out

    def update(self, batch, step) -> dict[str, torch.Tensor]:
        with step.autocast():
            losses = self.batch_losses(batch)
        step.backward(losses["loss"], self.optimizers[0])
        self.steps += 1
        return losses

    def evaluate_batch(self, batch) -> dict[str, torch.Tensor]:
        """Labelled (x, y) batches: source validation loss and accuracy."""
        x, y = batch
        logits = self.predict(x)
        return {
            "loss": F.cross_entropy(logits.float(), y),
            "acc": (logits.argmax(1) == y).float().mean(),
        }
