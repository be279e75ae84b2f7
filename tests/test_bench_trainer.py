"""bench/trainer_overhead.py times the same computation in both arms: the bare loop and the
Trainer, fed the same batches, end with the same weights (else the ratio measures a different
training, as when the bare arm skipped DANN's gradient-reversal schedule)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from bench import trainer_overhead as bench


@pytest.fixture(scope="module")
def mnist():
    return bench._mnist(192)


@pytest.mark.parametrize("which", ["mlp", "dann", "timm"])
def test_the_bare_arm_and_the_trainer_compute_the_same_training(which, mnist):
    x, y = mnist
    case = {
        "mlp": lambda: bench.ae_case("mlp", x),
        "dann": lambda: bench.da_case(x, y),
        "timm": lambda: bench.timm_case(x[:64], y[:64]),
    }[which]()
    indices = case.bare_index(torch.Generator().manual_seed(0))
    batches = [case.take(i) for i in indices]
    bare, trained = copy.deepcopy(case.method), copy.deepcopy(case.method)
    torch.manual_seed(0)
    bench.run_bare(bare, indices, case.take, case.lr)
    torch.manual_seed(0)
    bench.run_trainer(trained, batches, case.lr, epochs=1, progress=False)
    if which == "dann":  # its gradient-reversal schedule counts the steps: both arms' count
        assert bare.steps == trained.steps == len(indices)
    assert not hasattr(bare, "optimizers")  # the run's optimiser is not left on the model
    a, b = bare.state_dict(), trained.state_dict()
    changed = [
        k
        for k in a
        if a[k].is_floating_point() and not torch.equal(a[k], case.method.state_dict()[k])
    ]
    assert changed, "the arms trained nothing"
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=f"{which}: {k} differs between the arms")


@pytest.mark.parametrize("which", ["mlp", "dann", "timm"])
def test_both_arms_see_the_same_images_an_epoch(which, mnist):
    """images/s of the two arms divide the same count: the stage's loader and the bare index give
    as many batches and images (DANN's bare arm once met its short last source batch with a
    short target batch, where PairedLoader gives a full one)."""
    x, y = mnist  # 192 images: the last batch of every case is short
    case = {
        "mlp": lambda: bench.ae_case("mlp", x),
        "dann": lambda: bench.da_case(x, y),
        "timm": lambda: bench.timm_case(x[:100], y[:100]),
    }[which]()
    expected = {"mlp": 192, "dann": 96 + 2 * 64, "timm": 100}[which]
    assert bench.epoch_images(case) == expected
    short = copy.copy(case)
    short.bare_index = lambda g: case.bare_index(g)[:-1]  # a loop that drops the last batch
    with pytest.raises(AssertionError, match=r"the trainer's loader gives \d+ batches of"):
        bench.epoch_images(short)


@pytest.mark.parametrize("which", ["mlp", "dann", "timm"])
def test_the_stages_loader_gives_each_training_image_once_an_epoch_with_its_label(which, mnist):
    """The trainer arm is fed by the stage's own loader (not the bare batches the equal-weights
    test feeds it): an epoch of it holds every training image once (DANN: every source image
    once, each target batch full) and each image keeps its label."""
    x, y = mnist
    n = {"mlp": 192, "dann": 96, "timm": 100}[which]
    case = {
        "mlp": lambda: bench.ae_case("mlp", x),
        "dann": lambda: bench.da_case(x, y),
        "timm": lambda: bench.timm_case(x[:100], y[:100]),
    }[which]()
    where = {x[i].tobytes(): i for i in range(len(x))}
    assert len(where) == len(x), "the fixture's images must be distinct"
    seen, labels = [], []
    for batch in case.trainer_loader(0):
        images = batch[0].numpy()
        seen += [where[row.astype(np.float32).tobytes()] for row in images]
        if which != "mlp":
            labels += batch[1].tolist()
        if which == "dann":
            assert len(batch[2]) == case.batch_size
            assert all(where[r.tobytes()] >= 96 for r in batch[2].numpy())  # the target half
    assert sorted(seen) == list(range(n))
    if which != "mlp":
        assert labels == [int(y[i]) for i in seen]


@pytest.mark.parametrize(
    ("pairs", "word"),
    [
        ([1.00, 1.02, 0.99, 1.01, 1.00, 1.03, 0.98], "yes"),  # tight, above the goal
        ([0.90, 0.91, 0.89, 0.92, 0.90, 0.91, 0.90], "NO"),  # tight, below it
        ([0.93, 1.03, 0.87, 1.10, 0.95, 0.99, 0.91], "undetermined"),  # noisy, straddles it
        ([0.932, 0.94, 0.93, 0.935, 0.938, 0.931, 0.936], "NO"),  # a median "just under" is NO
    ],
)
def test_the_goal_verdict_is_decided_on_the_pairs_interval(pairs, word):
    gmean, low, high, got = bench.verdict(pairs)
    assert got == word
    assert low < gmean < high


def test_a_verdict_needs_two_repeats():
    with pytest.raises(ValueError, match="at least 2 repeats"):
        bench.verdict([1.0])


def test_the_verdict_interval_is_the_t_interval_of_the_mean_log_ratio():
    """Two pairs, 1.0 and 1.2: mean log 0.0912, sd 0.1289, t(0.975, 1) = 12.706 (z, ddof=0 or
    df=n would give another interval)."""
    gmean, low, high, word = bench.verdict([1.0, 1.2])
    assert gmean == pytest.approx(1.2**0.5)
    assert (low, high) == (pytest.approx(0.3440, abs=1e-3), pytest.approx(3.489, abs=1e-2))
    assert word == "undetermined"
