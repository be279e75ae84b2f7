"""Parametrised over the AE registry: each method trains on tiny real data with correct shapes."""

import numpy as np
import pytest
import torch

from adaptflow.config import MnistSource, TrainSettings
from adaptflow.data import SOURCES
from adaptflow.methods.ae import AE_METHODS
from adaptflow.methods.ae.base import FitContext
from adaptflow.registry import UnknownNameError
from adaptflow.stages.ae import reconstruction_metrics


@pytest.fixture(scope="module")
def mnist_small():
    s = SOURCES.get("mnist")(MnistSource(kind="mnist"), 0)
    return s.x_train[:512], s.x_train[512:640], s.x_test[:100]


@pytest.mark.parametrize("name", AE_METHODS.names())
def test_method_trains_and_reconstructs(name, mnist_small):
    x_tr, x_val, x_te = mnist_small
    torch.manual_seed(0)
    method = AE_METHODS.get(name)((1, 28, 28), [64], 16)
    settings = TrainSettings(epochs=3, batch_size=64, lr=3e-3, patience=None)
    history = method.fit(x_tr, x_val, FitContext(settings, torch.device("cpu"), 0, progress=False))
    codes, x_hat = method.encode_np(x_te), method.reconstruct_np(x_te)
    assert codes.shape == (100, 16)
    assert x_hat.shape == x_te.shape and x_hat.dtype == np.float32
    assert 0 <= x_hat.min() and x_hat.max() <= 1
    m = reconstruction_metrics(x_hat, x_te)
    # better than predicting the mean image: the code carries information about the input
    baseline = reconstruction_metrics(np.broadcast_to(x_tr.mean(0), x_te.shape).copy(), x_te)
    assert m["mse"] < baseline["mse"]
    if method.is_torch:
        losses = history.series("loss")
        assert losses[-1] < losses[0]


def test_pca_rejects_too_large_code():
    method = AE_METHODS.get("pca")((1, 4, 4), [], 32)
    x = np.random.rand(20, 1, 4, 4).astype(np.float32)
    with pytest.raises(ValueError, match="lower ae.code_size"):
        method.fit(x, x, FitContext(TrainSettings(), torch.device("cpu"), 0))


def test_registry_error_lists_names():
    with pytest.raises(UnknownNameError, match="valid names: ae, pca"):
        AE_METHODS.get("vae")
