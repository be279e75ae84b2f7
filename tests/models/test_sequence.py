"""The seq stage's models: shapes, and every one learns MNIST-1D for a few steps (finite,
decreasing loss); resampling keeps the curve; step timing returns positive medians."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adaptflow.config import Mnist1dSource, SeqModelConfig
from adaptflow.data import SOURCES
from adaptflow.methods.seq import resample, step_times, train_classifier
from adaptflow.models.sequence import SEQUENCE_MODELS, build_sequence_model
from adaptflow.training import seed_everything

CPU = torch.device("cpu")
SMALL = SeqModelConfig(
    d_model=16, heads=2, layers=1, d_ff=32, hidden=16, cnn_channels=8, dropout=0.0
)


@pytest.fixture(scope="module")
def mnist1d():
    return SOURCES.get("mnist1d")(Mnist1dSource(kind="mnist1d", num_samples=1000), 0)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_shapes(name):
    model = build_sequence_model(name, SMALL, 1, 10, 40)
    assert model(torch.randn(5, 1, 40)).shape == (5, 10)


def test_unknown_model_names_the_valid_ones():
    with pytest.raises(ValueError, match="transformer, lstm, gru, cnn"):
        build_sequence_model("rnn", SMALL, 1, 10, 40)


@pytest.mark.parametrize("name", SEQUENCE_MODELS)
def test_every_model_learns_mnist1d(mnist1d, name):
    seed_everything(0)
    x, y = mnist1d.x_train[:800], mnist1d.y_train[:800]
    model = build_sequence_model(name, SMALL, 1, 10, 40)
    _, history = train_classifier(
        model, x, y, epochs=20, lr=1e-2, weight_decay=0.0, batch_size=32, seed=0, device=CPU
    )
    losses = history.series("loss")
    assert all(math.isfinite(v) for v in losses)
    # it learns, not just runs (the recurrent nets sit near chance, 2.30, for ~6 epochs first)
    assert losses[-1] < losses[0] - 0.2


def test_recurrent_models_read_the_sequence_in_order():
    """Reversing the sequence changes an LSTM's output (it reads step by step), and a
    Transformer without positions could not tell: ours can (sinusoidal encodings)."""
    seed_everything(0)
    x = torch.randn(3, 1, 40)
    for name in ("lstm", "gru", "transformer"):
        model = build_sequence_model(name, SMALL, 1, 10, 40).eval()
        assert not torch.allclose(model(x), model(x.flip(-1)), atol=1e-5), name


def test_resample_keeps_the_curve():
    x = np.sin(np.linspace(0, 3, 40, dtype=np.float32))[None, None].repeat(2, 0)
    long = resample(x, 160)
    assert long.shape == (2, 1, 160) and long.dtype == np.float32
    assert long[0, 0, 0] == pytest.approx(x[0, 0, 0]) and long[0, 0, -1] == pytest.approx(
        x[0, 0, -1]
    )
    back = resample(long, 40)
    assert np.abs(back - x).max() < 1e-3


def test_step_times_are_positive_and_grow_with_length():
    seed_everything(0)
    y = np.zeros(8, dtype=np.int64)
    short = step_times(
        build_sequence_model("lstm", SMALL, 1, 10, 20),
        np.random.randn(8, 1, 20).astype(np.float32),
        y,
        8,
        3,
        CPU,
    )
    long = step_times(
        build_sequence_model("lstm", SMALL, 1, 10, 640),
        np.random.randn(8, 1, 640).astype(np.float32),
        y,
        8,
        3,
        CPU,
    )
    assert all(t > 0 for t in short + long)
    assert long[0] > short[0]  # an LSTM step is sequential in the length
