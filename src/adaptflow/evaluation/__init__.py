"""Measurements shared by stages: representation probes, image quality, anomaly scores, sparse
codes and generated samples."""

from adaptflow.evaluation.metrics import (
    DEAD_ACTIVATION,
    anomaly_auroc,
    different_class_pairs,
    fit_gaussian,
    generation_scores,
    knn_accuracy,
    linear_probe_accuracy,
    psnr,
    sample_gaussian,
    unit_activation_stats,
)

__all__ = [
    "DEAD_ACTIVATION",
    "anomaly_auroc",
    "different_class_pairs",
    "fit_gaussian",
    "generation_scores",
    "knn_accuracy",
    "linear_probe_accuracy",
    "psnr",
    "sample_gaussian",
    "unit_activation_stats",
]
