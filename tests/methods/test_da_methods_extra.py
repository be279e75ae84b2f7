"""Self-training's pseudo-labels and teachers, CDAN+E's conditioning and weights, and the target
oracle's use of the target labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from adaptflow.losses.alignment import cdan_features, pseudo_labels, randomized_multilinear
from adaptflow.methods.da import DA_METHODS
from adaptflow.models.featurizers import build_featurizer
from adaptflow.training import StepContext

STEP = StepContext(torch.device("cpu"), amp=False)


def make(name: str, n_classes=3, total_steps=10, steps_per_epoch=None, **config):
    torch.manual_seed(0)
    cls = DA_METHODS.get(name)
    extra = {} if steps_per_epoch is None else {"steps_per_epoch": steps_per_epoch}
    method = cls(
        build_featurizer((10,), dim=16), n_classes, cls.Config(**config), total_steps, **extra
    )
    method.optimizers = [torch.optim.Adam(method.parameters(), lr=1e-2)]
    return method


def batch(seed: int, n_s=8, n_t=6, in_dim=10, n_classes=3):
    g = torch.Generator().manual_seed(seed)
    x_s, x_t = torch.rand(n_s, in_dim, generator=g), torch.rand(n_t, in_dim, generator=g) + 1
    return x_s, torch.randint(0, n_classes, (n_s,), generator=g), x_t


def student_params(method) -> list[torch.Tensor]:
    return [
        p.detach().clone()
        for p in (*method.featurizer.parameters(), *method.classifier.parameters())
    ]


def teacher_params(method) -> list[torch.Tensor]:
    return [p.detach().clone() for p in method.teacher.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------- pseudo-labels


def test_pseudo_labels_keep_exactly_the_confident_rows():
    probs = torch.tensor(
        [[0.95, 0.03, 0.02], [0.50, 0.30, 0.20], [0.05, 0.05, 0.90], [0.10, 0.60, 0.30]]
    )
    labels, mask = pseudo_labels(probs, 0.9)
    assert labels.tolist() == [0, 0, 2, 1]
    assert mask.tolist() == [True, False, True, False]
    assert pseudo_labels(probs, 0.55)[1].tolist() == [True, False, True, True]


def test_pseudo_label_threshold_edge_keeps_a_tie_and_drops_anything_below():
    probs = torch.tensor([[0.75, 0.125, 0.125], [0.125, 0.125, 0.75]])  # exact in binary
    assert pseudo_labels(probs, 0.75)[1].tolist() == [True, True]
    # compared in the probabilities' precision: one float32 step above the tie drops it
    above = torch.nextafter(torch.tensor(0.75), torch.tensor(1.0)).item()
    assert pseudo_labels(probs, above)[1].tolist() == [False, False]
    assert pseudo_labels(probs, 0.75)[0].tolist() == [0, 2]


@pytest.mark.parametrize(
    "bad", [{"threshold": 0.0}, {"threshold": 1.0}, {"ema": 1.0}, {"refresh": "batch"}]
)
def test_self_training_rejects_bad_params(bad):
    with pytest.raises(ValidationError):
        DA_METHODS.get("self_training").Config(**bad)


# ---------------------------------------------------------------- self-training


def test_self_training_without_a_confident_target_learns_from_the_source_only():
    method = make("self_training", refresh="step")
    x_s, y_s, x_t = batch(0)
    assert torch.softmax(method.predict(x_t), 1).max() < 0.9  # an untrained net: no confidence
    losses = method.batch_losses((x_s, y_s, x_t))
    assert losses["kept"].item() == 0.0 and losses["align"].item() == 0.0
    losses["loss"].backward()
    grads = [p.grad.clone() for p in method.parameters()]
    method.zero_grad()
    F.cross_entropy(method.predict(x_s), y_s).backward()
    assert all(
        torch.allclose(a, p.grad, atol=1e-7)
        for a, p in zip(grads, method.parameters(), strict=True)
    )
    # the contrast: a threshold every example meets adds a target term and other gradients
    low = make("self_training", refresh="step", threshold=0.01)
    losses = low.batch_losses((x_s, y_s, x_t))
    assert losses["kept"].item() == 1.0 and losses["align"].item() > 0.5


def test_ema_teacher_lags_the_student_and_moves_toward_it_by_one_minus_the_momentum():
    method = make("self_training", ema=0.9)
    assert method.teacher is None
    start = student_params(method)
    method.update(batch(0), STEP)
    after = student_params(method)
    assert not same(start, after)
    expected = [0.9 * a + 0.1 * b for a, b in zip(start, after, strict=True)]
    assert all(
        torch.allclose(t, e, atol=1e-6)
        for t, e in zip(teacher_params(method), expected, strict=True)
    )
    for seed in range(1, 6):
        before = teacher_params(method)
        method.update(batch(seed), STEP)
        student, teacher = student_params(method), teacher_params(method)
        for t0, t1, s in zip(before, teacher, student, strict=True):
            assert torch.allclose(t1 - t0, 0.1 * (s - t0), atol=1e-6)
    assert not same(student_params(method), teacher_params(method))
    # a training device only: not optimised, not saved with the model
    assert all(not p.requires_grad for p in method.teacher.parameters())
    assert not any("teacher" in k for k in method.state_dict())
    assert len(list(method.parameters())) == len(student_params(method))


def test_epoch_teacher_is_frozen_within_an_epoch_and_refreshed_at_its_end():
    method = make("self_training", steps_per_epoch=3)
    for seed in range(3):  # epoch 1: no copy yet, the model labels its own batches
        method.update(batch(seed), STEP)
        assert method.teacher is None
    end_of_epoch_1 = student_params(method)
    for seed in range(3, 6):  # epoch 2: the copy taken at its start, unchanged throughout
        method.update(batch(seed), STEP)
        assert same(teacher_params(method), end_of_epoch_1)
        assert not same(student_params(method), end_of_epoch_1)
    end_of_epoch_2 = student_params(method)
    method.update(batch(6), STEP)
    assert same(teacher_params(method), end_of_epoch_2)


def test_the_teacher_not_the_student_makes_the_pseudo_labels():
    method = make("self_training", refresh="epoch", threshold=0.5)
    x_s, y_s, x_t = batch(0)
    method.refresh_teacher()
    frozen = torch.softmax(method.teacher(x_t), 1)
    for seed in range(1, 30):  # the student drifts away from the copy
        method.update(batch(seed), STEP)
    assert torch.allclose(method.teacher_probs(x_t, method.predict(x_t)), frozen)
    assert not torch.allclose(torch.softmax(method.predict(x_t), 1), frozen, atol=1e-3)


# ---------------------------------------------------------------- CDAN+E


def test_cdan_conditions_on_the_outer_product_or_its_randomized_map():
    f, probs = torch.randn(5, 16), torch.softmax(torch.randn(5, 3), 1)
    full = make("cdan")  # 16 × 3 = 48 <= max_dim
    assert full.condition(f, probs).shape == (5, 48)
    assert torch.equal(full.condition(f, probs), cdan_features(f, probs))
    assert full.domain[0].in_features == 48 and full.r_f is None
    small = make("cdan", max_dim=20)  # 48 > 20: randomized
    assert small.condition(f, probs).shape == (5, 20)
    assert small.domain[0].in_features == 20
    assert {"r_f", "r_g"} <= set(small.state_dict())  # fixed: saved, never optimised
    assert all(p is not small.r_f and p is not small.r_g for p in small.parameters())
    r_f = small.r_f.clone()
    small.update(batch(0), STEP)
    assert torch.equal(small.r_f, r_f)


def test_randomized_multilinear_map_preserves_the_inner_products_of_the_outer_product():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(4, 5, generator=g, dtype=torch.float64)
    probs = torch.softmax(torch.randn(4, 3, generator=g, dtype=torch.float64), 1)
    m = 200_000
    r_f = torch.randn(5, m, generator=g, dtype=torch.float64)
    r_g = torch.randn(3, m, generator=g, dtype=torch.float64)
    exact = cdan_features(f, probs)
    approx = randomized_multilinear(f, probs, r_f, r_g)
    gram, gram_approx = exact @ exact.T, approx @ approx.T
    assert torch.allclose(gram_approx, gram, atol=0.03 * gram.abs().max().item())
    # a too-small map is a poor estimate: the check above is not trivially met
    tiny = randomized_multilinear(f, probs, r_f[:, :2], r_g[:, :2])
    assert not torch.allclose(tiny @ tiny.T, gram, atol=0.03 * gram.abs().max().item())


def _effective_weights(method, f_s, f_t, logits_s, logits_t):
    """Each example's weight in the domain loss, read off the gradient at its domain logit:
    ∂L/∂d_i = w_i (σ(d_i) − y_i) / (2 n_domain)."""
    seen = {}
    hook = method.domain.register_forward_hook(lambda m, i, o: seen.setdefault("d", o))
    out = method.adaptation_loss(f_s, f_t, logits_s, logits_t)
    hook.remove()
    d = seen["d"]
    d.retain_grad()
    out["align"].backward()
    d, grad = d.detach().squeeze(1), d.grad.squeeze(1)
    y = torch.cat([torch.zeros(len(f_s)), torch.ones(len(f_t))])
    n = torch.cat([torch.full((len(f_s),), len(f_s)), torch.full((len(f_t),), len(f_t))])
    return 2 * n * grad / (torch.sigmoid(d) - y)


def test_cdan_entropy_weights_favour_confident_examples_per_domain():
    g = torch.Generator().manual_seed(0)
    f_s, f_t = torch.randn(4, 16, generator=g), torch.randn(6, 16, generator=g)
    confident, unsure = torch.tensor([12.0, -6.0, -6.0]), torch.zeros(3)
    logits_s = torch.stack([confident, unsure, confident, unsure])
    logits_t = torch.stack([unsure, confident, unsure, unsure, unsure, confident])
    w = _effective_weights(make("cdan", schedule=False), f_s, f_t, logits_s, logits_t)
    w_s, w_t = w[:4], w[4:]
    assert w_s.mean().item() == pytest.approx(1.0) and w_t.mean().item() == pytest.approx(1.0)
    # 1 + exp(−H): ~2 for a one-hot prediction, 1 + 1/3 for a uniform one over 3 classes
    assert (w_s[0] / w_s[1]).item() == pytest.approx(1.5, rel=1e-4)
    assert (w_t[1] / w_t[0]).item() == pytest.approx(1.5, rel=1e-4)
    plain = _effective_weights(make("cdan", entropy=False), f_s, f_t, logits_s, logits_t)
    assert torch.allclose(plain, torch.ones(10), atol=1e-5)


def test_cdan_reverses_the_domain_gradient_into_the_features_not_the_predictions():
    """With DANN's schedule, λ = 0 at the start (no gradient into the features); at the end, a
    descent step of the features raises the domain classifier's loss (they fool it)."""
    g = torch.Generator().manual_seed(0)
    f_s, f_t = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g) + 1
    logits_s, logits_t = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    method = make("cdan", total_steps=10)
    for steps, moved in ((0, False), (10, True)):
        method.steps = steps
        f = torch.cat([f_s, f_t]).requires_grad_()
        logits = torch.cat([logits_s, logits_t]).requires_grad_()
        out = method.adaptation_loss(f[:8], f[8:], logits[:8], logits[8:])
        out["align"].backward()
        assert logits.grad is None  # the conditioning p carries no gradient (tllib)
        assert bool(f.grad.abs().max() > 0) == moved
    with torch.no_grad():
        stepped = f - 0.5 * f.grad
        after = method.adaptation_loss(stepped[:8], stepped[8:], logits_s, logits_t)["align"]
    assert after.item() > out["align"].item()


# ---------------------------------------------------------------- target oracle


def test_target_oracle_learns_from_the_target_labels():
    method = make("target_oracle")
    x_s, y_s, x_t = batch(0)
    y_t = torch.tensor([0, 1, 2, 0, 1, 2])
    loss = method.batch_losses((x_s, y_s, x_t, y_t))["loss"]
    assert not torch.equal(loss, method.batch_losses((x_s, y_s, x_t, (y_t + 1) % 3))["loss"])
    # target only by default: the source batch does not count
    other_source = (x_s + 3, (y_s + 1) % 3, x_t, y_t)
    assert torch.equal(loss, method.batch_losses(other_source)["loss"])
    mixed = make("target_oracle", source_weight=0.5).batch_losses((x_s, y_s, x_t, y_t))
    assert mixed["loss"].item() == pytest.approx(
        mixed["target_cls"].item() + 0.5 * mixed["source_cls"].item()
    )
    assert mixed["target_cls"].item() == pytest.approx(loss.item(), rel=1e-5)


def test_target_oracle_refuses_a_batch_without_target_labels():
    method = make("target_oracle")
    with pytest.raises(ValueError, match="target labels"):
        method.update(batch(0), STEP)
    assert method.steps == 0


def test_target_oracle_solves_the_rotated_two_moons_source_only_fails():
    """The ceiling is real: with target labels the rotated moons are learnt (source-only
    reaches ~0.65 on this shift, tests/methods/test_da.py)."""
    from sklearn.datasets import make_moons

    from adaptflow.training import Trainer
    from adaptflow.training.loaders import array_loader

    t = np.deg2rad(35.0)
    rotation = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]], np.float32)
    x_s, y_s = make_moons(600, noise=0.1, random_state=0)
    x_t, y_t = make_moons(600, noise=0.1, random_state=100)
    x_t_test, y_t_test = make_moons(600, noise=0.1, random_state=200)
    x_s, x_t = x_s.astype(np.float32), (x_t.astype(np.float32) @ rotation.T)
    torch.manual_seed(0)
    cls = DA_METHODS.get("target_oracle")
    method = cls(build_featurizer((2,), dim=32), 2, cls.Config(), 300)
    loader = array_loader(x_s, y_s, x_t, y_t, batch_size=64, shuffle=True)
    Trainer(torch.device("cpu"), 30, progress=False, restore_best=False).fit(
        method, loader, optimizers=[torch.optim.Adam(method.parameters(), lr=3e-3)]
    )
    x_test = torch.from_numpy(x_t_test.astype(np.float32) @ rotation.T)
    with torch.no_grad():
        acc = (method.predict(x_test).argmax(1).numpy() == y_t_test).mean()
    assert acc > 0.95


def test_source_only_never_feeds_the_target_batch_to_the_network():
    """With batch norm in the featurizer, a target batch in the forward pass would move its
    statistics: the lower bound would be adapting. The update must not depend on x_t at all."""
    g = torch.Generator().manual_seed(0)
    x_s, y_s = torch.randn(8, 10, generator=g), torch.randint(0, 3, (8,), generator=g)
    states = []
    for shift in (0.0, 5.0):
        method = make("source_only")
        method.featurizer = torch.nn.Sequential(
            torch.nn.Linear(10, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU()
        )
        method.featurizer.dim = 16
        method.optimizers = [torch.optim.Adam(method.parameters(), lr=1e-2)]
        x_t = torch.randn(8, 10, generator=torch.Generator().manual_seed(1)) + shift
        method.update((x_s, y_s, x_t), StepContext(torch.device("cpu"), amp=False))
        states.append({k: v.clone() for k, v in method.state_dict().items()})
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k], msg=k)
