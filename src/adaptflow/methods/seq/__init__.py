"""Sequence classification (seed Q8): a classifier method for any module, and step timing."""

from adaptflow.methods.seq.classifier import (
    Classifier,
    median_ms,
    resample,
    step_times,
    train_classifier,
)

__all__ = ["Classifier", "median_ms", "resample", "step_times", "train_classifier"]
