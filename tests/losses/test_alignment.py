"""Known values of the domain-alignment losses (MMD, CORAL, gradient reversal, CDAN, MCC)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adaptflow.losses.alignment import (
    cdan_features,
    cdan_weights,
    coral,
    entropy,
    gaussian_kernels,
    grl_lambda,
    mcc,
    median_bandwidth,
    mmd2,
    reverse_grad,
)


def gauss(n: int, d: int, shift: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) + shift


def test_mmd_of_a_sample_with_itself_is_zero_and_grows_with_the_shift():
    x = gauss(64, 5, 0.0, 0)
    assert mmd2(x, x).item() == pytest.approx(0.0, abs=1e-6)
    near = mmd2(x, gauss(64, 5, 0.0, 1)).item()  # same law, another draw: small
    far = mmd2(x, gauss(64, 5, 1.0, 1)).item()
    farther = mmd2(x, gauss(64, 5, 3.0, 1)).item()
    assert near < far < farther and far > 5 * near


def test_mmd_matches_a_brute_force_computation():
    s, t = gauss(7, 3, 0.0, 2).double(), gauss(9, 3, 0.7, 3).double()
    pooled = torch.cat([s, t]).numpy()
    dists = [
        np.linalg.norm(a - b) for i, a in enumerate(pooled) for j, b in enumerate(pooled) if i != j
    ]
    sigma = float(np.median(dists))
    assert median_bandwidth(torch.cat([s, t])).item() == pytest.approx(sigma, rel=1e-5)
    sigmas = [m * sigma for m in (0.25, 0.5, 1.0, 2.0, 4.0)]

    def k(a, b):
        return np.mean([math.exp(-np.sum((a - b) ** 2) / (2 * sg**2)) for sg in sigmas])

    sn, tn = s.numpy(), t.numpy()
    expected = (
        np.mean([k(a, b) for a in sn for b in sn])
        + np.mean([k(a, b) for a in tn for b in tn])
        - 2 * np.mean([k(a, b) for a in sn for b in tn])
    )
    assert mmd2(s, t).item() == pytest.approx(expected, rel=1e-4)
    assert gaussian_kernels(s, t, sigmas).shape == (7, 9)


def test_coral_is_zero_for_equal_covariances_and_matches_the_formula():
    x = gauss(50, 4, 0.0, 0)
    assert coral(x, x + 3.0).item() == pytest.approx(0.0, abs=1e-6)  # a shift keeps C
    y = 2.0 * gauss(50, 4, 0.0, 1)
    c_s, c_t = np.cov(x.numpy().T), np.cov(y.numpy().T)
    expected = np.sum((c_s - c_t) ** 2) / (4 * 4**2)
    assert coral(x, y).item() == pytest.approx(expected, rel=1e-4)
    assert coral(x, y).item() > 0.1


def test_gradient_reversal_is_identity_forward_and_minus_lambda_backward():
    x = torch.randn(4, 3, requires_grad=True)
    y = reverse_grad(x, 0.3)
    assert torch.equal(y, x)
    (y * torch.arange(3.0)).sum().backward()
    assert torch.allclose(x.grad, -0.3 * torch.arange(3.0).expand(4, 3))


def test_grl_schedule_ramps_from_zero_to_one():
    values = [grl_lambda(p) for p in (0.0, 0.1, 0.5, 1.0)]
    assert values[0] == 0.0 and values == sorted(values)
    assert values[-1] == pytest.approx(1.0, abs=1e-4)
    assert values[1] == pytest.approx(2 / (1 + math.exp(-1)) - 1)


def test_entropy_and_cdan_conditioning():
    k = 4
    uniform = torch.full((2, k), 1 / k)
    assert torch.allclose(entropy(uniform), torch.full((2,), math.log(k)))
    f, p = torch.randn(5, 3), torch.softmax(torch.randn(5, k), 1)
    h = cdan_features(f, p)
    assert h.shape == (5, 3 * k)
    assert torch.allclose(h.view(5, k, 3), p[:, :, None] * f[:, None, :])
    confident = torch.tensor([[0.97, 0.01, 0.01, 0.01], [0.25, 0.25, 0.25, 0.25]])
    w = cdan_weights(confident)
    assert w[0] > w[1] and w.mean().item() == pytest.approx(1.0)


def test_mcc_is_low_for_confident_distinct_classes_and_high_for_confusion():
    diagonal = 20.0 * torch.eye(4).repeat(4, 1)  # 16 examples, each confidently one class
    confused = torch.zeros(16, 4)  # every example equally likely every class
    assert mcc(diagonal).item() < 0.05 < 0.5 < mcc(confused).item()
    # half the batch confidently class 0, half torn between 0 and 1: some confusion
    mixed = torch.cat([diagonal[:8], torch.tensor([[3.0, 3.0, -9.0, -9.0]]).repeat(8, 1)])
    assert mcc(diagonal).item() < mcc(mixed).item()
