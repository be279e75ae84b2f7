"""Self-training (pseudo-labelling, Lee 2013) with FixMatch's confidence threshold."""

from __future__ import annotations

import copy
import logging
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from adaptflow.losses.alignment import pseudo_labels
from adaptflow.methods.da.base import DA_METHODS, DAConfig, DAMethod

log = logging.getLogger(__name__)


class SelfTrainingConfig(DAConfig):
    threshold: float = Field(
        0.9, gt=0, lt=1, description="a target example is kept when its top probability >= this"
    )
    ema: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="EMA teacher momentum (e.g. 0.99), updated every step; null: no EMA",
    )
    refresh: Literal["epoch", "step"] = Field(
        "epoch", description="without ema: teacher = a copy taken every epoch, or the model itself"
    )


@DA_METHODS.register("self_training")
class SelfTraining(DAMethod):
    """Source cross-entropy + weight × the cross-entropy of the target examples a teacher labels
    with confidence >= threshold, against the teacher's argmax ("align": the mean over the
    target batch of mask × CE, FixMatch's form, so 0 when nothing is kept; "kept": the fraction
    kept). The teacher's probabilities carry no gradient. The teacher is:

    - `ema` set: an exponential moving average of the model's weights (and buffers), updated
      after every optimiser step (torch.optim.swa_utils.AveragedModel); `refresh` is ignored.
    - `refresh: epoch`: a frozen copy of the model taken at each epoch boundary, so pseudo-labels
      stay fixed for an epoch. The method learns the boundaries from `steps_per_epoch` (a
      constructor argument: len(train_loader)) and copies itself after every steps_per_epoch
      updates; or a caller invokes `refresh_teacher()` at each epoch end. Until the first copy
      (epoch 1, or always if neither happens) the teacher is the model itself, as with "step".
    - `refresh: step`: the model itself, its own detached predictions on the batch.

    The teachers are kept out of `parameters()` and `state_dict()`: training devices, not part
    of the saved model nor of the optimiser's parameters."""

    Config = SelfTrainingConfig

    def __init__(self, featurizer, n_classes, config, total_steps, steps_per_epoch=None):
        super().__init__(featurizer, n_classes, config, total_steps)
        if steps_per_epoch is not None and steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.steps_per_epoch = steps_per_epoch
        self._set_teacher(None)
        if config.ema is None and config.refresh == "epoch" and steps_per_epoch is None:
            log.warning(
                "self_training: no steps_per_epoch, so the teacher is the model itself until "
                "refresh_teacher() is called (pass steps_per_epoch=len(train_loader))"
            )

    def _set_teacher(self, teacher: nn.Module | None) -> None:
        object.__setattr__(self, "teacher", teacher)  # bypasses nn.Module's registration

    def _student(self) -> nn.Module:
        return nn.Sequential(self.featurizer, self.classifier)  # shares the modules, no copy

    def refresh_teacher(self) -> None:
        """Freeze a copy of the current model as the teacher (epoch refresh)."""
        self._set_teacher(copy.deepcopy(self._student()).requires_grad_(False).eval())

    def _start_ema(self) -> None:
        student = self._student()
        ema = get_ema_multi_avg_fn(self.config.ema)
        teacher = AveragedModel(student, multi_avg_fn=ema, use_buffers=True)
        teacher.update_parameters(student)  # the first call copies: EMA from the next one on
        self._set_teacher(teacher.requires_grad_(False).eval())

    def teacher_probs(self, x_t: torch.Tensor, logits_t: torch.Tensor) -> torch.Tensor:
        """The teacher's class probabilities on x_t (the model's own logits_t without one)."""
        with torch.no_grad():
            logits = logits_t if self.teacher is None else self.teacher(x_t)
            return F.softmax(logits.detach().float(), dim=1)

    def batch_losses(self, batch) -> dict[str, torch.Tensor]:
        x_s, y_s, x_t = batch[:3]
        logits = self.predict(torch.cat([x_s, x_t]))
        logits_s, logits_t = logits[: len(x_s)], logits[len(x_s) :]
        labels, mask = pseudo_labels(self.teacher_probs(x_t, logits_t), self.config.threshold)
        ce_t = F.cross_entropy(logits_t.float(), labels, reduction="none")
        out = {
            "cls": F.cross_entropy(logits_s.float(), y_s),
            "align": (ce_t * mask).mean(),
            "kept": mask.float().mean(),
        }
        out["loss"] = out["cls"] + self.config.weight * out["align"]
        return out

    def update(self, batch, step) -> dict[str, torch.Tensor]:
        if self.config.ema is not None:
            if self.teacher is None:
                self._start_ema()
        elif self.config.refresh == "epoch" and self.steps_per_epoch is not None:
            if self.steps > 0 and self.steps % self.steps_per_epoch == 0:
                self.refresh_teacher()
        losses = super().update(batch, step)
        if self.config.ema is not None:
            self.teacher.update_parameters(self._student())
        return losses
