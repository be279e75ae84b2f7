"""Greedy layer-wise pretraining: stacking, weight transfer, fine-tuning protocol, the RBM."""

import copy

import numpy as np
import pytest
import torch

from adaptflow.config import MnistSource, PretrainBudget, PretrainStageConfig, TrainSettings
from adaptflow.data import SOURCES
from adaptflow.methods.pretrain import LAYER_METHODS
from adaptflow.methods.pretrain.classifier import FineTuner, fine_tune
from adaptflow.methods.pretrain.greedy import codes, greedy_pretrain
from adaptflow.models.rbm import RBM
from adaptflow.models.stacked import DeepClassifier, StackedEncoder
from adaptflow.stages.budget import chance_threshold, epochs_to_common_level, epochs_to_reach
from adaptflow.stages.pretrain import build_arm

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def mnist_small():
    s = SOURCES.get("mnist")(MnistSource(kind="mnist"), 0)
    return s.x_train[:400], s.y_train[:400], s.x_test[:200], s.y_test[:200]


@pytest.mark.parametrize("method", LAYER_METHODS.names())
def test_each_layer_trains_on_the_trained_codes_of_the_layers_below(method, mnist_small):
    x = mnist_small[0]
    flat = x.reshape(len(x), -1)
    fed: dict[int, np.ndarray] = {}
    result = greedy_pretrain(
        x,
        [32, 16, 8],
        "sigmoid",
        method,
        LAYER_METHODS.get(method).Config(),
        PretrainBudget(epochs=2, batch_size=64),
        CPU,
        0,
        on_layer_input=lambda k, h: fed.__setitem__(k, h.copy()),
    )
    assert np.array_equal(fed[0], flat)  # layer 1 reads the images
    for k in (1, 2):  # layer k+1 reads h^(k) of the *trained* layers 1..k, every image
        np.testing.assert_allclose(fed[k], codes(result.encoder, flat, k, CPU), atol=1e-6)
        random_codes = codes(StackedEncoder(784, [32, 16, 8]), flat, k, CPU)
        assert np.abs(fed[k] - random_codes).max() > 0.05  # untrained weights would differ
    for k, layer in enumerate(result.layers):  # the stack holds each layer's trained encoder
        h = torch.from_numpy(fed[k])
        with torch.no_grad():
            np.testing.assert_allclose(
                result.encoder.blocks[k](h).numpy(), layer.encode(h).numpy(), atol=1e-6
            )
    assert len(result.layer_losses) == 3 and all(len(c) == 2 for c in result.layer_losses)


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


def test_arms_share_their_random_draw_and_greedy_gets_a_copy(mnist_small):
    x, y = mnist_small[0][:200], mnist_small[1][:200]
    greedy = greedy_pretrain(
        x,
        [32, 16],
        "sigmoid",
        "ae",
        LAYER_METHODS.get("ae").Config(),
        PretrainBudget(epochs=1),
        CPU,
        0,
    )
    pretrained = copy.deepcopy(greedy.encoder.state_dict())
    cfg = PretrainStageConfig(layers=[32, 16], epochs=1, batch_size=32)
    net_g = build_arm("greedy", greedy.encoder, cfg, 784, 10, seed=3)
    net_r = build_arm("random", greedy.encoder, cfg, 784, 10, seed=3)
    for k, v in pretrained.items():  # the greedy arm starts from the pretrained layers
        assert torch.equal(net_g.encoder.state_dict()[k], v)
    assert not torch.equal(net_r.encoder.blocks[0][0].weight, pretrained["blocks.0.0.weight"])
    for k, v in net_r.head.state_dict().items():  # the same head draw for both arms
        assert torch.equal(net_g.head.state_dict()[k], v)
    fine_tune(net_g, x, y, cfg, CPU, 0)
    assert not torch.equal(net_g.encoder.blocks[0][0].weight, pretrained["blocks.0.0.weight"])
    for k, v in pretrained.items():  # fine-tuning one fraction leaves the next one's init intact
        assert torch.equal(greedy.encoder.state_dict()[k], v)


def _net(seed: int = 0) -> DeepClassifier:
    torch.manual_seed(seed)
    return DeepClassifier(StackedEncoder(784, [32]), 10)


def test_last_epoch_keeps_the_last_epoch_and_the_monitor_selects_nothing(mnist_small):
    x, y, x_mon, y_mon = mnist_small
    settings = TrainSettings(epochs=4, batch_size=32, lr=3e-3, patience=None)
    scrambled = np.random.default_rng(0).permutation(y_mon)  # its loss is lowest early on
    plain, _ = fine_tune(_net(), x, y, settings, CPU, 0)
    watched, history = fine_tune(_net(), x, y, settings, CPU, 0, monitor=(x_mon, scrambled))
    for k, v in plain.state_dict().items():  # a monitor changes nothing about the result
        assert torch.equal(watched.state_dict()[k], v)
    curve = history.series("monitor_acc")
    assert len(curve) == 4
    assert watched.accuracy(x_mon, scrambled, CPU) == pytest.approx(curve[-1])  # = last epoch


def test_budget_split_keeps_the_epoch_with_the_lowest_selection_loss(mnist_small):
    x, y = mnist_small[0][:40], mnist_small[1][:40]
    x_sel, y_sel = mnist_small[0][300:], mnist_small[1][300:]
    settings = TrainSettings(epochs=8, batch_size=8, lr=2e-2, patience=None)
    model, history = fine_tune(_net(), x, y, settings, CPU, 0, select=(x_sel, y_sel))
    losses = history.series("val_loss")
    assert history.best_epoch < len(losses)  # precondition: the last epoch is not the best
    with torch.no_grad():
        logits = model.eval().net(torch.from_numpy(x_sel))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y_sel)).item()
    assert loss == pytest.approx(min(losses), rel=1e-5)


def test_fine_tuner_accuracy_counts_correct_predictions():
    net = _net()
    x = np.random.default_rng(0).random((7, 1, 28, 28), dtype=np.float32)
    with torch.no_grad():
        pred = net(torch.from_numpy(x)).argmax(1).numpy()
    y = pred.copy()
    y[:3] = (y[:3] + 1) % 10  # three wrong
    assert FineTuner(net).accuracy(x, y, CPU) == pytest.approx(4 / 7)


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


def test_epochs_to_reach_is_relative_to_the_best_epoch():
    # best 0.9 at epoch 3 -> target 0.855: epoch 3 (relative to the last value, 0.4, it'd be 2)
    assert epochs_to_common_level({"a": [0.3, 0.6, 0.9, 0.4]}, 0.95, 10) == {"a": 3}
    assert epochs_to_common_level({"a": [0.1, 0.5, 0.9, 0.95, 1.0]}, 0.95, 10) == {"a": 4}
    assert epochs_to_common_level({"a": [0.9, 0.9]}, 0.95, 10) == {"a": 1}
    assert epochs_to_reach([0.3, 0.6, 0.7], 0.8, 10) is None  # target never reached in budget


def test_convergence_target_is_common_to_both_arms():
    """Random plateaus at 40 % by epoch 3, greedy climbs to 85 % by epoch 12: measured against
    its own best, random would 'converge' at epoch 3 and win; against the common target
    (0.95 x 0.85) it never gets there, and greedy does."""
    random = [0.2, 0.35, 0.4] + [0.4] * 12
    greedy = [0.3 + 0.05 * i for i in range(11)] + [0.85] * 4
    reached = epochs_to_common_level({"greedy": greedy, "random": random}, 0.95, 10)
    assert reached == {"greedy": 12, "random": None}
    assert epochs_to_reach(random, 0.95 * max(random), 10) == 3  # the old, own-best rule


@pytest.mark.parametrize(
    ("k", "threshold", "stuck", "left"),
    [(10, 0.19, [0.10, 0.15, 0.189], [0.10, 0.15, 0.19]), (2, 0.55, [0.5, 0.549], [0.5, 0.55])],
)
def test_a_curve_that_never_leaves_chance_is_not_converged(k, threshold, stuck, left):
    # 1/K + 10 % of the way to perfect: 19 % for digits, 55 % for two classes (not 2/K = 100 %)
    assert chance_threshold(k) == pytest.approx(threshold)
    assert epochs_to_common_level({"a": stuck}, 0.95, k) == {"a": None}
    assert epochs_to_common_level({"a": left}, 0.95, k) == {"a": len(left)}
