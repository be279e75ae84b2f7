"""The Fréchet distance: 0 for a set with itself, the closed form for Gaussians with diagonal
covariances, growing with a shift, and clear errors for unusable inputs."""

from __future__ import annotations

import numpy as np
import pytest

from adaptflow.evaluation.frechet import frechet_distance


def test_a_set_with_itself_is_at_distance_zero():
    x = np.random.default_rng(0).normal(size=(500, 8))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)


def test_diagonal_gaussians_match_the_closed_form():
    """With diagonal covariances d² = ‖μ₁ − μ₂‖² + Σ (σ₁ − σ₂)²; the estimate from 20,000
    samples each lands within a few percent of it."""
    rng = np.random.default_rng(1)
    mu1, mu2 = np.zeros(4), np.array([1.0, -2.0, 0.5, 0.0])
    sd1, sd2 = np.array([1.0, 2.0, 0.5, 1.0]), np.array([1.5, 1.0, 0.5, 3.0])
    a = mu1 + sd1 * rng.normal(size=(20000, 4))
    b = mu2 + sd2 * rng.normal(size=(20000, 4))
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((sd1 - sd2) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.05)


def test_it_grows_with_a_shift_and_two_halves_of_one_set_stay_close():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2000, 6))
    floor = frechet_distance(x[:1000], x[1000:])  # the sampling noise of 1,000 vs 1,000
    shifted = [frechet_distance(x[:1000], x[1000:] + s) for s in (0.5, 1.0, 2.0)]
    assert floor < 0.1
    assert floor < shifted[0] < shifted[1] < shifted[2]
    assert shifted[2] == pytest.approx(6 * 2.0**2, rel=0.05)  # ‖δ‖² for δ = 2 in 6 dims


def test_fewer_samples_than_dimensions_still_gives_a_finite_distance():
    rng = np.random.default_rng(3)
    d = frechet_distance(rng.normal(size=(10, 32)), rng.normal(size=(10, 32)))
    assert np.isfinite(d) and d > 0


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        (np.zeros((1, 3)), np.zeros((5, 3)), "n >= 2"),
        (np.zeros((5, 3)), np.zeros((5, 4)), "widths differ"),
        (np.zeros(5), np.zeros(5), "n >= 2"),
    ],
)
def test_unusable_inputs_name_the_problem(a, b, match):
    with pytest.raises(ValueError, match=match):
        frechet_distance(a, b)


def test_it_matches_the_reference_formula_with_sqrtm():
    """The symmetric form gives the reference FID code's value (scipy sqrtm of Σ₁Σ₂) on
    well-conditioned covariances."""
    from scipy import linalg

    rng = np.random.default_rng(4)
    a = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 5))
    b = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5)) + 0.3
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)
