import numpy as np
import pytest

from adaptflow.evaluation import (
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


def test_unit_band_fraction_and_dead_units_on_hand_made_activations():
    rho = 0.05
    # per-unit means: in band (rho, both edges), below band, above band, dead
    means = np.array([0.05, 0.025, 0.1, 0.02, 0.3, DEAD_ACTIVATION / 2])
    z = np.tile(means, (4, 1))
    z[:2] += 0.001 * np.array([1, -1, 1, -1, 1, 0])[None]  # per-row jitter, same unit means
    z[2:] -= 0.001 * np.array([1, -1, 1, -1, 1, 0])[None]
    stats = unit_activation_stats(z, rho)
    assert stats["unit_band_fraction"] == pytest.approx(3 / 6)
    assert stats["dead_units"] == 1
    assert stats["mean_activation"] == pytest.approx(means.mean())
    # two-sided: codes all at 0.5 (never sparse) have no unit in band and none dead
    assert unit_activation_stats(np.full((10, 8), 0.5), rho)["unit_band_fraction"] == 0


def test_gaussian_code_sampler_matches_mean_and_covariance():
    mean = np.array([1.0, -2.0, 0.5])
    a = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.5, 0.2]])
    cov = a @ a.T
    z = sample_gaussian(mean, cov, 40_000, seed=0)
    assert z.dtype == np.float32 and z.shape == (40_000, 3)
    m_hat, cov_hat = fit_gaussian(z)
    np.testing.assert_allclose(m_hat, mean, atol=0.03)
    np.testing.assert_allclose(cov_hat, cov, atol=0.03)
    # a singular covariance (codes on a line) still samples, on that line
    line = sample_gaussian(np.zeros(2), np.array([[1.0, 1.0], [1.0, 1.0]]), 100, seed=1)
    np.testing.assert_allclose(line[:, 0], line[:, 1], atol=1e-4)
    # seeded: same draws for the same seed, different for another
    np.testing.assert_array_equal(
        sample_gaussian(mean, cov, 5, 2), sample_gaussian(mean, cov, 5, 2)
    )
    assert not np.allclose(sample_gaussian(mean, cov, 5, 2), sample_gaussian(mean, cov, 5, 3))


def test_generation_scores_known_values():
    k = 10
    one_class = np.tile(np.eye(k)[3], (50, 1))  # confident, but every sample is a 3: collapse
    s = generation_scores(one_class)
    assert s == {"confidence": 1.0, "class_entropy": 0.0, "classes_hit": 1.0}
    balanced = np.eye(k)[np.arange(100) % k] * 0.6 + 0.04  # each class 10 times, max prob 0.64
    s = generation_scores(balanced)
    assert s["confidence"] == pytest.approx(0.64)
    assert s["class_entropy"] == pytest.approx(1.0)
    assert s["classes_hit"] == k
    two = np.eye(k)[np.r_[np.zeros(30, int), np.ones(10, int)]]  # histogram 3:1 over 2 classes
    p = np.array([0.75, 0.25])
    assert generation_scores(two)["class_entropy"] == pytest.approx(
        -(p * np.log(p)).sum() / np.log(k)
    )


def test_different_class_pairs():
    y = np.array([0, 0, 0, 1, 2, 2])
    a, b = different_class_pairs(y, 50, seed=0)
    assert len(a) == len(b) == 50
    assert (y[a] != y[b]).all()
    np.testing.assert_array_equal(a, different_class_pairs(y, 50, seed=0)[0])
    with pytest.raises(ValueError, match="two classes"):
        different_class_pairs(np.zeros(5, int), 3, seed=0)
