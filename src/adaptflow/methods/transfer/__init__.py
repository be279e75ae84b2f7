"""Transfer learning from a timm backbone: a head on frozen features, logistic regression on
them, and fine-tuning (from a pretrained backbone, or from scratch with unfreeze="all")."""

from adaptflow.methods.transfer.finetune import FineTune, finetune, lr_schedule
from adaptflow.methods.transfer.linear import LinearHead, accuracy, train_head
from adaptflow.methods.transfer.logreg import fit_logreg

__all__ = [
    "FineTune",
    "LinearHead",
    "accuracy",
    "finetune",
    "fit_logreg",
    "lr_schedule",
    "train_head",
]
