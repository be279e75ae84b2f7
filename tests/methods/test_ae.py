"""Parametrised over the AE registry and both architectures: each method trains on tiny real
data with a decreasing loss, and its codes and reconstructions have the right shapes."""

import numpy as np
import pytest
import torch

from adaptflow.config import MnistSource, TrainSettings
from adaptflow.data import SOURCES
from adaptflow.methods.ae import AE_METHODS
from adaptflow.methods.ae.base import FitContext
from adaptflow.models.factory import NetSpec
from adaptflow.registry import UnknownNameError
from adaptflow.stages.ae import reconstruction_metrics


@pytest.fixture(scope="module")
def mnist_small():
    s = SOURCES.get("mnist")(MnistSource(kind="mnist"), 0)
    return s.x_train[:512], s.x_train[512:640], s.x_test[:100]


CASES = [(n, "mlp") for n in AE_METHODS.names()] + [
    (n, "conv") for n in AE_METHODS.names() if AE_METHODS.get(n).is_torch
]


@pytest.mark.parametrize(("name", "arch"), CASES)
def test_method_trains_and_reconstructs(name, arch, mnist_small):
    x_tr, x_val, x_te = mnist_small
    torch.manual_seed(0)
    spec = NetSpec((1, 28, 28), arch, (64,), (8, 16), 16)
    method = AE_METHODS.get(name)(spec)
    settings = TrainSettings(epochs=3, batch_size=64, lr=3e-3, patience=None)
    history = method.fit(x_tr, x_val, FitContext(settings, torch.device("cpu"), 0, progress=False))
    codes, x_hat = method.encode_np(x_te), method.reconstruct_np(x_te)
    assert codes.shape == (100, 16)
    assert x_hat.shape == x_te.shape and x_hat.dtype == np.float32
    assert 0 <= x_hat.min() and x_hat.max() <= 1
    if method.is_torch:
        losses = history.series("loss")
        assert losses[-1] < losses[0]
    else:  # PCA: better than predicting the mean image
        mean = np.broadcast_to(x_tr.mean(0), x_te.shape).copy()
        assert (
            reconstruction_metrics(x_hat, x_te)["mse"] < reconstruction_metrics(mean, x_te)["mse"]
        )


def test_sparse_codes_are_probabilities():
    m = AE_METHODS.get("sparse")(NetSpec((1, 28, 28), "mlp", (32,), (8,), 10))
    z = m.encode_np(np.random.rand(5, 1, 28, 28).astype(np.float32))
    assert z.min() > 0 and z.max() < 1


def test_vae_bound_and_samples(mnist_small):
    x_tr, x_val, x_te = mnist_small
    torch.manual_seed(0)
    vae = AE_METHODS.get("vae")(NetSpec((1, 28, 28), "mlp", (64,), (8,), 8))
    vae.fit(
        x_tr,
        x_val,
        FitContext(TrainSettings(epochs=2, batch_size=64), torch.device("cpu"), 0, False),
    )
    x = (torch.from_numpy(x_te[:20]) > 0.5).float()
    nll, neg_elbo = (
        vae.nll(x, k=200).mean(),
        torch.stack([vae.negative_elbo(x) for _ in range(20)]).mean(),
    )
    assert 0 < nll <= neg_elbo  # the IW estimate is a tighter bound than the ELBO
    assert vae.sample(6).shape == (6, 1, 28, 28)


def test_conv_rejects_odd_sizes():
    with pytest.raises(ValueError, match="divisible by 4"):
        AE_METHODS.get("ae")(NetSpec((1, 30, 30), "conv", (), (8, 16), 4))


def test_pca_rejects_too_large_code():
    method = AE_METHODS.get("pca")(NetSpec((1, 4, 4), code_size=32))
    x = np.random.rand(20, 1, 4, 4).astype(np.float32)
    with pytest.raises(ValueError, match="lower ae.code_size"):
        method.fit(x, x, FitContext(TrainSettings(), torch.device("cpu"), 0))


def test_registry_error_lists_names():
    with pytest.raises(UnknownNameError, match="valid names: ae, denoising, pca, sparse, vae"):
        AE_METHODS.get("rbm")
