import numpy as np
import pytest

from adaptflow.evaluation import anomaly_auroc, knn_accuracy, linear_probe_accuracy, psnr


def test_anomaly_auroc_trivially_separable():
    rng = np.random.default_rng(0)
    normal, anomalous = rng.normal(0, 1, 200), rng.normal(6, 1, 20)
    scores = np.concatenate([normal, anomalous])
    labels = np.r_[np.zeros(200, bool), np.ones(20, bool)]
    assert anomaly_auroc(scores, labels) > 0.9
    assert anomaly_auroc(-scores, labels) < 0.1
    with pytest.raises(ValueError):
        anomaly_auroc(scores, np.zeros(220, bool))


def test_psnr_known_value():
    x = np.zeros((3, 1, 4, 4), np.float32)
    assert psnr(x + 0.1, x) == pytest.approx(20.0, abs=1e-4)  # 10 log10(1 / 0.01)


def test_probes_on_separable_codes():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 60)
    z = rng.normal(0, 0.3, (180, 5)) + np.eye(5)[y] * 3
    assert linear_probe_accuracy(z[::2], y[::2], z[1::2], y[1::2]) > 0.95
    assert knn_accuracy(z[::2], y[::2], z[1::2], y[1::2]) > 0.95
    assert knn_accuracy(rng.normal(size=(90, 5)), y[::2], rng.normal(size=(90, 5)), y[1::2]) < 0.6
