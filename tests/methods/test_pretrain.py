"""Greedy layer-wise pretraining: stacking, weight transfer, every layer method, the RBM."""

import copy

import numpy as np
import pytest
import torch

from adaptflow.config import MnistSource, PretrainBudget, TrainSettings
from adaptflow.data import SOURCES
from adaptflow.methods.pretrain import LAYER_METHODS
from adaptflow.methods.pretrain.classifier import fine_tune
from adaptflow.methods.pretrain.greedy import greedy_pretrain
from adaptflow.models.rbm import RBM
from adaptflow.models.stacked import DeepClassifier, StackedEncoder
from adaptflow.stages.pretrain import epochs_to_reach, labelled_subset

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def mnist_small():
    s = SOURCES.get("mnist")(MnistSource(kind="mnist"), 0)
    return s.x_train[:400], s.y_train[:400], s.x_test[:200], s.y_test[:200]


@pytest.mark.parametrize("method", LAYER_METHODS.names())
def test_greedy_feeds_each_layer_the_codes_below(method, mnist_small):
    x = mnist_small[0]
    options = LAYER_METHODS.get(method).Config()
    result = greedy_pretrain(
        x, [32, 16, 8], "sigmoid", method, options, PretrainBudget(epochs=2, batch_size=64), CPU, 0
    )
    assert [s[1] for s in result.input_shapes] == [784, 32, 16]  # layer k reads h^(k-1)
    assert all(s[0] == len(x) for s in result.input_shapes)  # every unlabeled image, each layer
    assert len(result.layer_losses) == 3 and all(len(c) == 2 for c in result.layer_losses)
    assert result.encoder(torch.from_numpy(x[:5])).shape == (5, 8)


@pytest.mark.parametrize("method", ["ae", "denoising", "sparse"])
def test_layer_reconstruction_improves(method, mnist_small):
    x = mnist_small[0]
    result = greedy_pretrain(
        x,
        [64],
        "sigmoid",
        method,
        LAYER_METHODS.get(method).Config(),
        PretrainBudget(epochs=4, batch_size=32, lr=3e-3),
        CPU,
        0,
    )
    curve = result.layer_losses[0]
    assert curve[-1] < curve[0]


def test_head_keeps_pretrained_weights_and_fine_tuning_moves_them(mnist_small):
    x, y, x_te, y_te = mnist_small
    result = greedy_pretrain(
        x,
        [32, 16],
        "sigmoid",
        "ae",
        LAYER_METHODS.get("ae").Config(),
        PretrainBudget(epochs=1),
        CPU,
        0,
    )
    before = copy.deepcopy(result.encoder.state_dict())
    net = DeepClassifier(result.encoder, 10)
    for k, v in before.items():  # adding the head changes no pretrained weight
        assert torch.equal(net.encoder.state_dict()[k], v)
    assert net(torch.from_numpy(x[:3])).shape == (3, 10)
    settings = TrainSettings(epochs=2, batch_size=32, lr=1e-3, patience=None)
    model, history = fine_tune(net, x, y, x_te, y_te, settings, CPU, 0, progress=False)
    assert not torch.equal(
        model.net.encoder.blocks[0][0].weight, before["blocks.0.0.weight"]
    )  # end to end
    assert len(history.series("val_acc")) == 2


def test_load_layer_rejects_wrong_shape():
    enc = StackedEncoder(784, [32])
    with pytest.raises(ValueError, match="layer 1"):
        enc.load_layer(0, torch.zeros(16, 784), torch.zeros(16))


def test_rbm_cd_lowers_reconstruction_error(mnist_small):
    x = torch.from_numpy(mnist_small[0].reshape(400, -1))
    torch.manual_seed(0)
    rbm = RBM(784, 64)
    opt = torch.optim.SGD(rbm.parameters(), lr=0.05)

    def recon_error():
        with torch.no_grad():
            return ((rbm.visible_probs(rbm.hidden_probs(x)) - x) ** 2).mean().item()

    start = recon_error()
    for _ in range(5):
        for i in range(0, 400, 20):
            opt.zero_grad()
            rbm.cd_loss(x[i : i + 20], k=1).backward()
            opt.step()
    assert recon_error() < 0.7 * start


def test_rbm_free_energy_matches_brute_force():
    """exp(-F(v)) = sum_h exp(-E(v, h)) for a tiny RBM, enumerated exactly."""
    torch.manual_seed(0)
    rbm = RBM(3, 2)
    v = torch.tensor([[1.0, 0.0, 1.0]])
    hs = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    energies = -(v @ rbm.b_v) - hs @ rbm.b_h - (hs @ rbm.W @ v.t()).squeeze(1)
    assert rbm.free_energy(v).item() == pytest.approx(
        -torch.logsumexp(-energies, 0).item(), abs=1e-5
    )


def test_rbm_layers_need_sigmoid():
    with pytest.raises(ValueError, match="sigmoid"):
        LAYER_METHODS.get("rbm")(10, 5, "relu", True)


def test_labelled_subset_is_stratified_and_seeded():
    y = np.repeat(np.arange(10), 100)
    a, b = labelled_subset(y, 0.05, 0), labelled_subset(y, 0.05, 0)
    assert len(a) == 50 and np.array_equal(a, b)
    assert np.bincount(y[a]).tolist() == [5] * 10
    assert len(labelled_subset(y, 1.0, 0)) == 1000
    assert len(labelled_subset(y, 0.001, 0)) == 10  # never fewer than one per class


def test_epochs_to_reach():
    assert epochs_to_reach([0.1, 0.5, 0.9, 0.95, 1.0], 0.95) == 4
    assert epochs_to_reach([0.9, 0.9], 0.95) == 1
