"""The training loop shared by every stage: device/AMP, seeding, early stopping, checkpoints."""

from adaptflow.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from adaptflow.training.device import resolve_device, seed_everything
from adaptflow.training.trainer import (
    EarlyStopping,
    History,
    NonFiniteLossError,
    OneOptimizerMethod,
    StepContext,
    Trainer,
)

__all__ = [
    "CheckpointError",
    "EarlyStopping",
    "History",
    "NonFiniteLossError",
    "OneOptimizerMethod",
    "StepContext",
    "Trainer",
    "load_checkpoint",
    "resolve_device",
    "save_checkpoint",
    "seed_everything",
]
