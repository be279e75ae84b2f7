"""Measurements shared by stages: representation probes, image quality, anomaly scores."""

from adaptflow.evaluation.metrics import anomaly_auroc, knn_accuracy, linear_probe_accuracy, psnr

__all__ = ["anomaly_auroc", "knn_accuracy", "linear_probe_accuracy", "psnr"]
