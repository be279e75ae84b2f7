"""Known values of the losses the seed defines."""

import math

import pytest
import torch

from adaptflow.losses.noise import gaussian, masking
from adaptflow.losses.sparsity import kl_bernoulli, kl_sparsity
from adaptflow.losses.vae import importance_weighted_nll, kl_normal, reparameterize


def test_kl_rho_rho_is_zero_and_positive_elsewhere():
    rho = 0.05
    assert kl_bernoulli(rho, torch.tensor(rho)).item() == pytest.approx(0.0, abs=1e-7)
    assert kl_bernoulli(rho, torch.tensor([0.01, 0.2, 0.9])).min() > 0
    # closed form at one point: rho log(rho/q) + (1-rho) log((1-rho)/(1-q))
    q = 0.2
    expected = rho * math.log(rho / q) + (1 - rho) * math.log((1 - rho) / (1 - q))
    assert kl_bernoulli(rho, torch.tensor(q)).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(("mean_act", "sign"), [(0.3, 1.0), (0.01, -1.0)])
def test_kl_sparsity_gradient_pushes_activation_towards_rho(mean_act, sign):
    """Above rho the gradient wrt the activations is positive (descent lowers them), below negative."""
    h = torch.full((16, 4), mean_act, requires_grad=True)
    kl_sparsity(h, rho=0.05).backward()
    assert torch.all(torch.sign(h.grad) == sign)


def test_kl_sparsity_sums_over_units():
    h = torch.full((8, 3), 0.2)
    assert kl_sparsity(h, 0.05).item() == pytest.approx(
        3 * kl_bernoulli(0.05, torch.tensor(0.2)).item(), rel=1e-6
    )


def test_vae_kl_of_standard_normal_is_zero():
    mu, logvar = torch.zeros(5, 8), torch.zeros(5, 8)
    assert torch.allclose(kl_normal(mu, logvar), torch.zeros(5))
    # KL(N(1, 1) || N(0, 1)) = 0.5 per dimension
    assert kl_normal(torch.ones(1, 4), torch.zeros(1, 4)).item() == pytest.approx(2.0)


def test_reparameterised_sample_carries_gradient_to_mu_and_sigma():
    mu = torch.zeros(64, 3, requires_grad=True)
    logvar = torch.zeros(64, 3, requires_grad=True)
    torch.manual_seed(0)
    z = reparameterize(mu, logvar)
    (z**2).sum().backward()
    assert mu.grad is not None and mu.grad.abs().sum() > 0
    assert logvar.grad is not None and logvar.grad.abs().sum() > 0


def test_iw_nll_exact_for_a_matching_model():
    """With q(z|x) = p(z) and p(x|z) = p(x), every weight equals p(x): the estimate is exact."""
    x = torch.tensor([[1.0, 0.0, 1.0]])
    logits = torch.tensor([0.3, -1.2, 2.0])

    def encode(x):
        return torch.zeros(len(x), 2), torch.zeros(len(x), 2)

    def decode(z):
        return logits.expand(len(z), 3)

    expected = -torch.distributions.Bernoulli(logits=logits).log_prob(x).sum()
    assert importance_weighted_nll(encode, decode, x, k=120).item() == pytest.approx(
        expected.item(), rel=1e-5
    )


def test_masking_drops_the_asked_fraction():
    x = torch.ones(200, 1, 28, 28)
    g = torch.Generator().manual_seed(0)
    for p in (0.1, 0.3, 0.7):
        dropped = (masking(x, p, g) == 0).float().mean().item()
        assert dropped == pytest.approx(p, abs=0.01)


def test_gaussian_noise_level_and_range():
    x = torch.full((100, 1, 28, 28), 0.5)
    y = gaussian(x, 0.1, torch.Generator().manual_seed(0))
    assert (y - x).std().item() == pytest.approx(0.1, rel=0.05)
    assert y.min() >= 0 and y.max() <= 1
