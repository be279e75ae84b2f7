"""The GAN method: shapes, the losses the seed's minimax game defines, both players learning on
real digits, the D:G step ratio, and the collapse guard on a constructed collapse."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adaptflow.config import MnistSource
from adaptflow.data import SOURCES
from adaptflow.methods.gan import Adversarial, CollapseGuard, GANCollapseError
from adaptflow.models.dcgan import Discriminator, Generator
from adaptflow.training import StepContext, Trainer, seed_everything
from adaptflow.training.loaders import array_loader

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    split = SOURCES.get("mnist")(MnistSource(kind="mnist"), 0)
    return split.x_train[:512], split.y_train[:512]


pytestmark = pytest.mark.usefixtures("one_thread")


def _optimizers(m: Adversarial, lr_d=2e-4, lr_g=2e-4):
    return [
        torch.optim.Adam(m.D.parameters(), lr=lr_d, betas=(0.5, 0.999)),
        torch.optim.Adam(m.G.parameters(), lr=lr_g, betas=(0.5, 0.999)),
    ]


@pytest.mark.parametrize("n_classes", [0, 10])
def test_shapes_and_ranges(n_classes):
    seed_everything(0)
    g, d = Generator(16, n_classes, 8), Discriminator(n_classes, 8)
    y = torch.arange(6) % 10
    zy = g.inputs(6, y if n_classes else None)
    assert zy.shape == (6, 16 + n_classes)
    x = g(zy)
    assert x.shape == (6, 1, 28, 28) and x.min() >= 0 and x.max() <= 1
    assert d(x, y if n_classes else None).shape == (6,)
    samples = g.sample(7, y=(torch.arange(7) % 10) if n_classes else None, seed=3)
    again = g.sample(7, y=(torch.arange(7) % 10) if n_classes else None, seed=3)
    assert samples.shape == (7, 1, 28, 28) and torch.equal(samples, again)  # seeded


def test_conditioning_reaches_both_players():
    seed_everything(0)
    g, d = Generator(16, 10, 8), Discriminator(10, 8)
    g.eval(), d.eval()
    z = torch.randn(1, 16).repeat(2, 1)
    zy = torch.cat([z, F.one_hot(torch.tensor([3, 7]), 10).float()], 1)
    x = g(zy)
    assert not torch.allclose(x[0], x[1])  # same noise, different class: different image
    same = x[:1].repeat(2, 1, 1, 1)
    logits = d(same, torch.tensor([3, 7]))
    assert not torch.isclose(logits[0], logits[1])
    with pytest.raises(ValueError, match="class"):
        g.inputs(2)
    with pytest.raises(ValueError, match="class"):
        d(same)


class _FixedD(torch.nn.Module):
    """Outputs logit a on all-ones images (what the test feeds as "real") and b on anything
    else (G's sigmoid output is never exactly 1)."""

    def __init__(self, a: float, b: float):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x, y=None):
        real = (x == 1).flatten(1).all(1)
        return torch.where(real, torch.tensor(self.a), torch.tensor(self.b))


def test_losses_are_the_minimax_game_with_the_non_saturating_g_loss():
    """D fixed to logit a on real and b on fake images: loss_D = -log σ(a) - log(1 - σ(b)) and
    loss_G = -log σ(b) (the non-saturating form, not log(1 - σ(b)))."""
    a, b = 1.5, -0.7
    m = Adversarial(8, 0, 4)
    m.D = _FixedD(a, b)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    d = m._d_loss(torch.ones(5, 1, 28, 28), None)
    assert d["d_loss"].item() == pytest.approx(-math.log(sig(a)) - math.log(1 - sig(b)), rel=1e-5)
    assert d["d_acc_real"].item() == 1.0 and d["d_acc_fake"].item() == 1.0  # a > 0 > b
    assert m._g_loss(5, None).item() == pytest.approx(-math.log(sig(b)), rel=1e-5)
    m.D = _FixedD(-a, -b)  # D fooled both ways: accuracy 0
    d = m._d_loss(torch.ones(5, 1, 28, 28), None)
    assert d["d_acc_real"].item() == 0.0 and d["d_acc_fake"].item() == 0.0


def test_one_sided_label_smoothing_changes_only_the_real_target():
    seed_everything(0)
    x = torch.rand(8, 1, 28, 28)
    losses = []
    for real_label in (1.0, 0.9):
        seed_everything(0)
        m = Adversarial(8, 0, 4, real_label=real_label).eval()
        seed_everything(1)
        losses.append(m._d_loss(x, None)["d_loss"].item())
    assert losses[0] != pytest.approx(losses[1])
    with pytest.raises(ValueError, match="real_label"):
        Adversarial(8, 0, 4, real_label=0.4)


def test_each_player_lowers_its_own_loss_on_real_digits(digits):
    """A few D steps (G fixed) lower D's loss on a fixed batch; then a few G steps (D fixed)
    lower G's loss: both halves of the game learn."""
    x, _ = digits
    seed_everything(0)
    m = Adversarial(16, 0, 8)
    opt_d, opt_g = _optimizers(m, 1e-3, 1e-3)
    xb = torch.from_numpy(x[:64])

    def d_loss():
        seed_everything(5)
        with torch.no_grad():
            return m._d_loss(xb, None)["d_loss"].item()

    def g_loss():
        seed_everything(6)
        with torch.no_grad():
            return m._g_loss(64, None).item()

    before = d_loss()
    for _ in range(15):
        loss = m._d_loss(xb, None)["d_loss"]
        opt_d.zero_grad(), loss.backward(), opt_d.step()
    after = d_loss()
    assert math.isfinite(after) and after < 0.7 * before
    before = g_loss()
    for _ in range(15):
        loss = m._g_loss(64, None)
        opt_g.zero_grad(), loss.backward(), opt_g.step()
    assert g_loss() < 0.9 * before  # a G that did not learn stays where it was


@pytest.mark.parametrize("conditional", [False, True])
def test_the_game_trains_through_the_shared_trainer(digits, conditional):
    x, y = digits
    seed_everything(0)
    m = Adversarial(16, 10 if conditional else 0, 8)
    loader = (
        array_loader(x, y, batch_size=64, shuffle=True)
        if conditional
        else array_loader(x, batch_size=64, shuffle=True)
    )
    trainer = Trainer(CPU, epochs=2, progress=False, monitor="g_loss", restore_best=False)
    g0 = [p.detach().clone() for p in m.G.parameters()]
    history = trainer.fit(m, loader, optimizers=_optimizers(m))
    last = history.epochs[-1]
    assert {"d_loss", "g_loss", "d_acc_real", "d_acc_fake"} <= set(last)
    assert all(math.isfinite(v) for v in last.values())
    assert history.epochs[-1]["d_loss"] < history.epochs[0]["d_loss"]  # D learns first
    assert any(not torch.equal(a, b) for a, b in zip(g0, m.G.parameters(), strict=True))
    assert not hasattr(m, "optimizers")  # the optimisers are not part of the saved model


def test_d_steps_is_the_d_to_g_update_ratio(digits):
    x, _ = digits
    m = Adversarial(16, 0, 8, d_steps=3)
    opt_d, opt_g = _optimizers(m)
    m.optimizers = [opt_d, opt_g]
    batch = [torch.from_numpy(x[:32])]
    for _ in range(2):
        m.update(batch, StepContext(CPU, amp=False))
    step = lambda opt: int(next(iter(opt.state.values()))["step"])  # noqa: E731
    assert step(opt_d) == 6 and step(opt_g) == 2
    with pytest.raises(ValueError, match="d_steps"):
        Adversarial(16, 0, 8, d_steps=0)


def test_collapse_guard_needs_a_streak_of_outright_wins():
    guard = CollapseGuard(epochs=3, acc=0.99, g_loss=8.0)
    win = {"d_acc_real": 1.0, "d_acc_fake": 1.0, "g_loss": 9.0}
    healthy_but_d_right = {"d_acc_real": 1.0, "d_acc_fake": 1.0, "g_loss": 5.0}  # G still learns
    guard(1, win), guard(2, win), guard(3, healthy_but_d_right)  # the streak breaks
    guard(4, win), guard(5, win)
    with pytest.raises(GANCollapseError, match="3 epochs"):
        guard(6, win)


def test_collapse_guard_fires_on_a_constructed_collapse(digits):
    """G cannot learn (lr 0): D soon rejects every fake with a huge margin and the run stops
    with the reason, instead of training on."""
    x, _ = digits
    seed_everything(0)
    m = Adversarial(16, 0, 8)
    guard = CollapseGuard(epochs=2, acc=0.99, g_loss=6.0)
    trainer = Trainer(
        CPU, epochs=30, progress=False, monitor="g_loss", restore_best=False, on_epoch_end=guard
    )
    with pytest.raises(GANCollapseError, match="D won outright"):
        trainer.fit(
            m,
            array_loader(x, batch_size=64, shuffle=True),
            optimizers=_optimizers(m, 2e-3, 0.0 + 1e-12),
        )
    assert guard.streak == 2
    # the same guard and D, with G learning at D's rate: no outright win, the run goes on
    seed_everything(0)
    m = Adversarial(16, 0, 8)
    healthy = CollapseGuard(epochs=2, acc=0.99, g_loss=6.0)
    trainer = Trainer(
        CPU, epochs=4, progress=False, monitor="g_loss", restore_best=False, on_epoch_end=healthy
    )
    history = trainer.fit(
        m, array_loader(x, batch_size=64, shuffle=True), optimizers=_optimizers(m, 2e-3, 2e-3)
    )
    assert len(history.epochs) == 4 and healthy.streak == 0


def test_a_nan_loss_stops_the_game(digits):
    from adaptflow.training import NonFiniteLossError

    x, _ = digits
    seed_everything(0)
    m = Adversarial(16, 0, 8)
    bad = np.array(x[:64])
    bad[0, 0, 0, 0] = np.nan
    trainer = Trainer(
        CPU, epochs=1, progress=False, monitor="g_loss", restore_best=False, log_every=1
    )
    with pytest.raises(NonFiniteLossError):
        trainer.fit(m, array_loader(bad, batch_size=64, shuffle=False), optimizers=_optimizers(m))
