"""The target oracle: the same network trained with the target labels, an upper bound."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from adaptflow.methods.da.base import DA_METHODS, DAConfig, DAMethod


class OracleConfig(DAConfig):
    source_weight: float = Field(
        0.0, ge=0, description="weight of the source cross-entropy (0: target labels only)"
    )


@DA_METHODS.register("target_oracle")
class TargetOracle(DAMethod):
    """Supervised on the labelled target batch: cross-entropy on (x_t, y_t), plus
    `source_weight` × the source cross-entropy. Its batches are (x_s, y_s, x_t, y_t).

    It reads the target labels, so it is no adaptation method: its score is reported apart, as
    the ceiling the unsupervised methods are measured against, and never used to select
    anything (a method, a hyper-parameter, an epoch). `weight` is unused (no alignment term)."""

    Config = OracleConfig
    uses_target_labels = True

    def batch_losses(self, batch) -> dict[str, torch.Tensor]:
        if len(batch) != 4:
            raise ValueError(
                f"target_oracle trains on (x_s, y_s, x_t, y_t) batches, got {len(batch)} tensors: "
                "give it a loader that also yields the target labels"
            )
        x_s, y_s, x_t, y_t = batch
        if self.config.source_weight == 0:
            # target-only: the source never enters the forward pass (nor any batch statistics)
            target_cls = F.cross_entropy(self.predict(x_t).float(), y_t)
            return {"cls": target_cls, "target_cls": target_cls, "loss": target_cls}
        logits = self.predict(torch.cat([x_s, x_t]))
        source_cls = F.cross_entropy(logits[: len(x_s)].float(), y_s)
        target_cls = F.cross_entropy(logits[len(x_s) :].float(), y_t)
        cls = target_cls + self.config.source_weight * source_cls
        return {"cls": cls, "target_cls": target_cls, "source_cls": source_cls, "loss": cls}
