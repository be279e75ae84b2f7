"""Domain-adaptation methods: the shared surface (every registered method, image and vector
inputs), the paired loader, and DANN's domain classifier really separating the domains."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptflow.methods.da import DA_METHODS
from adaptflow.models.featurizers import build_featurizer
from adaptflow.training import StepContext
from adaptflow.training.loaders import PairedLoader

CPU = torch.device("cpu")


def make(name: str, input_shape, n_classes=3, total_steps=10, **config):
    torch.manual_seed(0)
    cls = DA_METHODS.get(name)
    method = cls(
        build_featurizer(input_shape, dim=16), n_classes, cls.Config(**config), total_steps
    )
    method.optimizers = [torch.optim.Adam(method.parameters(), lr=1e-3)]
    return method


@pytest.mark.parametrize("name", DA_METHODS.names())
@pytest.mark.parametrize("input_shape", [(1, 28, 28), (10,)], ids=["image", "vector"])
def test_every_method_updates_on_a_batch_pair_and_predicts(name, input_shape):
    method = make(name, input_shape)
    g = torch.Generator().manual_seed(0)
    x_s, x_t = torch.rand(8, *input_shape, generator=g), torch.rand(6, *input_shape, generator=g)
    y_s = torch.randint(0, 3, (8,), generator=g)
    batch = (x_s, y_s, x_t)
    if name == "target_oracle":  # the only method trained with target labels
        batch += (torch.randint(0, 3, (6,), generator=g),)
    before = [p.detach().clone() for p in method.featurizer.parameters()]
    losses = method.update(batch, StepContext(CPU, amp=False))
    assert all(torch.isfinite(v).all() for v in losses.values())
    expected = losses["cls"] + losses.get("align", torch.tensor(0.0))  # weight 1 by default
    assert losses["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert method.steps == 1
    assert any(
        not torch.equal(a, b) for a, b in zip(before, method.featurizer.parameters(), strict=True)
    )
    assert method.predict(x_t).shape == (6, 3)
    assert method.uses_target_labels == (name == "target_oracle")


def test_source_only_ignores_the_target_batch():
    method = make("source_only", (10,))
    x_s, y_s = torch.rand(8, 10), torch.randint(0, 3, (8,))
    a = method.batch_losses((x_s, y_s, torch.rand(6, 10)))["loss"]
    b = method.batch_losses((x_s, y_s, 5 + torch.rand(6, 10)))["loss"]
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["mmd", "coral"])
def test_alignment_terms_see_the_domain_gap(name):
    method = make(name, (10,))
    x_s, y_s = torch.rand(16, 10), torch.randint(0, 3, (16,))
    same = method.batch_losses((x_s, y_s, torch.rand(16, 10)))["align"]
    shifted = method.batch_losses((x_s, y_s, 3 * torch.rand(16, 10) + 2))["align"]
    assert shifted.item() > 2 * same.item()


@pytest.mark.parametrize("name", ["dann", "cdan"])
def test_domain_classifier_separates_the_domains_before_reversal(name):
    """A single-logit softmax (a peer's bug) has zero loss and learns nothing: ours (one logit,
    sigmoid) must start near log 2 and drive the domain accuracy to ~1 on separable domains."""
    method = make(name, (10,), schedule=False)
    head = torch.optim.Adam(method.domain.parameters(), lr=1e-2)  # only the domain head learns
    g = torch.Generator().manual_seed(1)
    f_s = torch.randn(64, 16, generator=g)
    f_t = torch.randn(64, 16, generator=g) + 1.5
    logits_s, logits_t = torch.randn(64, 3, generator=g), torch.randn(64, 3, generator=g)
    first = None
    for _ in range(200):
        out = method.adaptation_loss(f_s, f_t, logits_s, logits_t)
        first = first if first is not None else out["align"].item()
        head.zero_grad()
        out["align"].backward()
        head.step()
    assert method.domain[-1].out_features == 1
    assert 0.4 < first < 1.2  # ~log 2 for an untrained classifier
    assert out["align"].item() < 0.3 * first and out["domain_acc"].item() > 0.9


def test_dann_reverses_the_domain_gradient_into_the_features():
    method = make("dann", (10,), schedule=False)
    f = torch.randn(8, 16, requires_grad=True)
    method.domain_logits(f, 1.0).sum().backward()
    reversed_grad = f.grad.clone()
    f.grad = None
    method.domain(f).sum().backward()
    assert torch.allclose(reversed_grad, -f.grad)


def test_paired_loader_pairs_every_source_batch_with_a_full_target_batch():
    x_s, y_s = np.zeros((10, 2), np.float32), np.arange(10)
    x_t = np.arange(7, dtype=np.float32).reshape(7, 1).repeat(2, 1)
    loader = PairedLoader(x_s, y_s, x_t, batch_size=4, seed=0)
    batches = list(loader)
    assert len(batches) == len(loader) == 3
    assert [len(b[2]) for b in batches] == [4, 4, 4]
    seen = torch.cat([b[2][:, 0] for b in batches]).tolist()
    assert set(seen[:7]) == set(range(7))  # one full pass over the target before repeating
    with pytest.raises(ValueError, match="no examples"):
        PairedLoader(x_s, y_s, x_t[:0], batch_size=4)


def _rotated_moons(seed: int, degrees: float = 35.0):
    from sklearn.datasets import make_moons

    t = np.deg2rad(degrees)
    rotation = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    x_s, y_s = make_moons(600, noise=0.1, random_state=seed)
    x_t, y_t = make_moons(600, noise=0.1, random_state=seed + 100)
    return x_s.astype(np.float32), y_s, (x_t @ rotation.T).astype(np.float32), y_t


def _target_accuracy(
    name: str, seed: int, epochs: int = 30, batch: int = 64, data=None, **config
) -> float:
    from adaptflow.training import Trainer

    x_s, y_s, x_t, y_t = (data or _rotated_moons)(seed)
    torch.manual_seed(seed)
    cls = DA_METHODS.get(name)
    steps = epochs * int(np.ceil(len(x_s) / batch))
    n_classes = int(y_s.max()) + 1
    method = cls(build_featurizer(x_s.shape[1:], dim=32), n_classes, cls.Config(**config), steps)
    trainer = Trainer(CPU, epochs, progress=False, restore_best=False)
    optimizer = torch.optim.Adam(method.parameters(), lr=3e-3)
    trainer.fit(method, PairedLoader(x_s, y_s, x_t, batch, seed), optimizers=[optimizer])
    with torch.no_grad():
        return float((method.predict(torch.from_numpy(x_t)).argmax(1).numpy() == y_t).mean())


@pytest.mark.slow  # ~70 s: nine trainings
def test_adaptation_beats_source_only_on_a_rotated_two_moons_shift():
    """Two moons, the target rotated 35°, no target label used: MMD and DANN beat source-only
    on every seed (measured: source-only ~0.65, MMD ~0.85, DANN 0.70-0.93). DANN's plain
    one-hidden-layer domain head here: its batch-norm head (the default, needed on digits) is
    measured at 0.62-0.71 on this 2-D shift, no better than source-only."""
    seeds = (0, 1, 2)
    base = np.array([_target_accuracy("source_only", s) for s in seeds])
    mmd = np.array([_target_accuracy("mmd", s) for s in seeds])
    dann = np.array([_target_accuracy("dann", s, batch_norm=False) for s in seeds])
    assert base.max() < 0.75  # the shift is real: the source classifier fails on the target
    assert (mmd - base > 0.1).all()
    assert (dann > base).all() and (dann - base).mean() > 0.05


def test_dann_ramps_lambda_over_the_run_by_the_schedule():
    """λ at update k is 2/(1+exp(−10 p)) − 1 with p = k/total (the progress before the step):
    0 at the first update, ~0.46 at p = 0.1, ~0.987 at the last of 20."""
    from adaptflow.losses.alignment import grl_lambda

    total = 20
    method = make("dann", (10,), total_steps=total)
    g = torch.Generator().manual_seed(0)
    lams = []
    for _ in range(total):
        batch = (torch.rand(8, 10, generator=g), torch.randint(0, 3, (8,), generator=g))
        lams.append(
            method.update((*batch, torch.rand(8, 10, generator=g)), StepContext(CPU, False))[
                "grl_lambda"
            ].item()
        )
    assert lams == pytest.approx([grl_lambda(k / total) for k in range(total)], abs=1e-6)
    assert lams[0] == 0.0 and lams[2] == pytest.approx(0.462, abs=1e-3) and lams[-1] > 0.98
    fixed = make("dann", (10,), total_steps=total, schedule=False)
    out = fixed.update((*batch, torch.rand(8, 10, generator=g)), StepContext(CPU, False))
    assert out["grl_lambda"].item() == 1.0


def _scaled_blobs(seed: int, d: int = 5):
    """Three Gaussian classes in d dimensions; the target's axes rescaled (×0.3 to ×3) and
    shifted by 2: a shift of scale and location, not of orientation."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 2.0, (3, d))

    def draw(n):
        y = rng.integers(0, 3, n)
        return (means[y] + rng.normal(0, 1, (n, d))).astype(np.float32), y

    (x_s, y_s), (x_t, y_t) = draw(600), draw(600)
    x_t = (x_t @ np.diag(np.linspace(0.3, 3.0, d)) + 2.0).astype(np.float32)
    return x_s, y_s, x_t, y_t


def test_mcc_beats_source_only_on_a_scaled_and_shifted_blobs_shift():
    """MCC (a default method) on a second seeded shift, no target label used (measured:
    source-only 0.83 / 0.76 / 0.85, MCC 0.92 / 0.88 / 0.93). CORAL, measured on both synthetic
    shifts, shows no reliable gain (two moons −0.01 / −0.01 / −0.04; these blobs +0.02 / −0.01 /
    +0.03): it only matches feature covariances; its gain is measured on the digit pairs."""
    accs = {}
    for name in ("source_only", "mcc"):
        accs[name] = np.array([_target_accuracy(name, s, data=_scaled_blobs) for s in (0, 1, 2)])
    assert accs["source_only"].max() < 0.87  # the shift is real
    assert (accs["mcc"] - accs["source_only"] > 0.05).all()
