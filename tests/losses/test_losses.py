"""Known values of the losses the seed defines."""

import math

import numpy as np
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


def test_reparameterised_samples_have_the_asked_mean_and_std():
    mu = torch.tensor([-1.0, 0.5, 2.0]).expand(200_000, 3)
    sigma = torch.tensor([0.5, 1.0, 2.0])
    torch.manual_seed(0)
    z = reparameterize(mu, (2 * sigma.log()).expand(200_000, 3))
    se = sigma / math.sqrt(len(z))
    assert torch.all((z.mean(0) - mu[0]).abs() < 4 * se)
    torch.testing.assert_close(z.std(0), sigma, rtol=0.01, atol=0)


def test_reparameterisation_gradients_are_one_and_half_sigma_eps():
    """z = mu + sigma * eps, sigma = exp(logvar / 2): dz/dmu = 1, dz/dlogvar = 0.5 * sigma * eps."""
    mu = torch.tensor([[0.3, -2.0, 1.0]], requires_grad=True)
    logvar = torch.tensor([[-1.0, 0.0, 1.5]], requires_grad=True)
    torch.manual_seed(0)
    z = reparameterize(mu, logvar)
    torch.manual_seed(0)
    eps = torch.randn(1, 3)  # the draw reparameterize made
    sigma = torch.exp(0.5 * logvar.detach())
    torch.testing.assert_close(z.detach(), mu.detach() + sigma * eps)
    z.sum().backward()
    torch.testing.assert_close(mu.grad, torch.ones(1, 3))
    torch.testing.assert_close(logvar.grad, 0.5 * sigma * eps)


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


# A 1-D latent, z ~ N(0, 1), and a decoder whose Bernoulli logits depend on z: a_j z + b_j.
# p(x) = integral of N(z; 0, 1) prod_j Bern(x_j | sigmoid(a_j z + b_j)) dz, by quadrature.
# q(z|x) = N(0.6, 1.3) is not the posterior (mean 1.09, sd 0.74): the weights differ.
IW_A, IW_B, IW_X = [2.0, -1.5, 0.7], [0.3, 0.5, -1.0], [1.0, 0.0, 1.0]
IW_MU, IW_VAR = 0.6, 1.3


def _iw_model():
    a, b = torch.tensor(IW_A), torch.tensor(IW_B)

    def encode(x):
        return torch.full((len(x), 1), IW_MU), torch.full((len(x), 1), math.log(IW_VAR))

    def decode(z):
        return z * a + b

    return encode, decode


def _quadrature() -> tuple[float, float]:
    """(-log p(x), -ELBO) of the model above, integrated on a fine grid."""
    from scipy.special import log_expit, logsumexp

    z = np.linspace(-12, 12, 240_001)
    dz = z[1] - z[0]
    logits = z[:, None] * np.array(IW_A) + np.array(IW_B)
    x = np.array(IW_X)
    log_joint = (x * log_expit(logits) + (1 - x) * log_expit(-logits)).sum(1)
    log_joint -= 0.5 * (z**2 + math.log(2 * math.pi))
    log_q = -0.5 * ((z - IW_MU) ** 2 / IW_VAR + math.log(2 * math.pi * IW_VAR))
    neg_elbo = -(np.exp(log_q) * (log_joint - log_q)).sum() * dz
    return -(logsumexp(log_joint) + math.log(dz)), neg_elbo


def test_iw_nll_matches_the_integral_for_a_latent_dependent_decoder():
    nll, neg_elbo = _quadrature()
    assert neg_elbo - nll > 0.5  # q is far from the posterior: the bound is loose at k = 1
    encode, decode = _iw_model()
    torch.manual_seed(0)
    estimate = importance_weighted_nll(encode, decode, torch.tensor([IW_X]), k=20_000).item()
    # sd of this estimate over seeds is 0.004 nats; a sampling std of exp(logvar) instead of
    # exp(logvar / 2) is off by 0.06, a missing log p(z) or -log k by several nats
    assert estimate == pytest.approx(nll, abs=0.025)


def test_iw_nll_with_one_sample_is_the_elbo_on_average():
    nll, neg_elbo = _quadrature()
    encode, decode = _iw_model()
    torch.manual_seed(0)
    single = importance_weighted_nll(encode, decode, torch.tensor([IW_X]).repeat(50_000, 1), k=1)
    se = single.std().item() / math.sqrt(len(single))
    assert abs(single.mean().item() - neg_elbo) < 4 * se < 0.1 * (neg_elbo - nll)


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
