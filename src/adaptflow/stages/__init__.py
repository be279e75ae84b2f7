"""Stages: what each pipeline step computes, independent of Prefect (flows/ wraps these)."""

from adaptflow.stages import ae, da, features, finetune, gan, pretrain, seq, source  # noqa: F401  (register)
from adaptflow.stages.base import STAGES, StageContext, StageOutcome, execute

__all__ = ["STAGES", "StageContext", "StageOutcome", "execute"]
