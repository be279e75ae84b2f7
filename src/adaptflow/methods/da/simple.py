"""Baselines and moment-matching methods: source_only, MMD (DAN), Deep CORAL, MCC."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from adaptflow.losses.alignment import coral, mcc, mmd2
from adaptflow.methods.da.base import DA_METHODS, DAConfig, DAMethod


@DA_METHODS.register("source_only")
class SourceOnly(DAMethod):
    """Trained on labelled source batches only: the lower bound every adaptation method must
    beat. The target batch never enters the network, so a featurizer with batch norm (timm)
    does not learn target statistics either."""

    def batch_losses(self, batch) -> dict[str, torch.Tensor]:
        x_s, y_s = batch[:2]
        loss = F.cross_entropy(self.predict(x_s).float(), y_s)
        return {"cls": loss, "loss": loss}


@DA_METHODS.register("mmd")
class MMD(DAMethod):
    """DAN (Long et al. 2015): multi-kernel Gaussian MMD² between source and target features,
    bandwidths from the median heuristic (losses.alignment.mmd2)."""

    def adaptation_loss(self, f_s, f_t, logits_s, logits_t):
        return {"align": mmd2(f_s, f_t)}


@DA_METHODS.register("coral")
class Coral(DAMethod):
    """Deep CORAL (Sun & Saenko 2016): ‖C_s − C_t‖²_F / (4 d²) of the feature covariances."""

    def adaptation_loss(self, f_s, f_t, logits_s, logits_t):
        return {"align": coral(f_s, f_t)}


class MCCConfig(DAConfig):
    temperature: float = Field(2.5, gt=0, description="softmax temperature of the confusion")


@DA_METHODS.register("mcc")
class MCC(DAMethod):
    """Minimum class confusion (Jin et al. 2020) on the target predictions."""

    Config = MCCConfig

    def adaptation_loss(self, f_s, f_t, logits_s, logits_t):
        return {"align": mcc(logits_t, self.config.temperature)}
