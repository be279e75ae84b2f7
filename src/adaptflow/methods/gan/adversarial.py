"""The GAN minimax game (Goodfellow et al. 2014), the seed's Q7:

    min_G max_D  E_x[log D(x)] + E_z[log(1 − D(G(z)))]

D ascends it: loss_D = BCE(D(x), 1) + BCE(D(G(z)), 0). G uses the non-saturating form, maximising
log D(G(z)) (loss_G = BCE(D(G(z)), 1)): log(1 − D(G(z))) has a vanishing gradient exactly when D
wins, early in training. Each training batch gives `d_steps` D updates (fresh noise each, the same
real batch), then one G update: the D:G step ratio. With a class condition (cGAN) G and D both
see the class; a fake gets the class of a real image of the batch, so the fakes' class mix is the
data's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from adaptflow.models.dcgan import Discriminator, Generator
from adaptflow.training.trainer import NonFiniteLossError, StepContext

GAN_VARIANTS = {"dcgan": False, "cgan": True}  # name -> conditional on the class


class GANCollapseError(NonFiniteLossError):
    """D won outright for too long: G gets no useful gradient (collapse); the run fails, and no
    model of it is registered. A NonFiniteLossError, so it is never retried."""


class Adversarial(torch.nn.Module):
    """G and D as one method of the shared trainer: `method.optimizers = [opt_D, opt_G]`."""

    def __init__(
        self,
        z_dim: int = 64,
        n_classes: int = 0,
        channels: int = 32,
        d_steps: int = 1,
        real_label: float = 1.0,
        d_dropout: float = 0.0,
    ):
        """`real_label` < 1: one-sided label smoothing of D's real targets (Salimans et al.
        2016), so D cannot push its real logits to infinity and G keeps a gradient."""
        super().__init__()
        if d_steps < 1:
            raise ValueError(f"d_steps must be >= 1 (D updates per G update), got {d_steps}")
        if not 0.5 < real_label <= 1:
            raise ValueError(f"real_label must be in (0.5, 1], got {real_label}")
        self.G = Generator(z_dim, n_classes, channels)
        self.D = Discriminator(n_classes, channels, d_dropout)
        self.d_steps, self.real_label = d_steps, real_label

    @property
    def conditional(self) -> bool:
        return self.G.n_classes > 0

    def _unpack(self, batch) -> tuple[Tensor, Tensor | None]:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        if not self.conditional:
            return x, None  # an unconditional GAN never reads a label
        if not isinstance(batch, (list, tuple)) or len(batch) < 2:
            raise ValueError("a conditional GAN trains on (image, class) batches")
        return x, batch[1]

    def _d_loss(self, x: Tensor, y: Tensor | None) -> dict[str, Tensor]:
        with torch.no_grad():
            fake = self.G(self.G.inputs(len(x), y))
        real_logit, fake_logit = self.D(x, y), self.D(fake, y)
        real_target = torch.full_like(real_logit, self.real_label, dtype=torch.float)
        loss = F.binary_cross_entropy_with_logits(
            real_logit.float(), real_target
        ) + F.binary_cross_entropy_with_logits(
            fake_logit.float(), torch.zeros_like(fake_logit, dtype=torch.float)
        )
        return {
            "d_loss": loss,
            "d_acc_real": (real_logit > 0).float().mean(),
            "d_acc_fake": (fake_logit < 0).float().mean(),
        }

    def _g_loss(self, n: int, y: Tensor | None) -> Tensor:
        logit = self.D(self.G(self.G.inputs(n, y)), y).float()
        return F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))  # non-saturating

    def update(self, batch, step: StepContext) -> dict[str, Tensor]:
        opt_d, opt_g = self.optimizers
        x, y = self._unpack(batch)
        for _ in range(self.d_steps):
            with step.autocast():
                d = self._d_loss(x, y)
            step.backward(d["d_loss"], opt_d)
        with step.autocast():
            g_loss = self._g_loss(len(x), y)
        step.backward(g_loss, opt_g)
        return d | {"g_loss": g_loss}

    def evaluate_batch(self, batch) -> dict[str, Tensor]:
        """The same game on held-out real images and fresh noise, nothing updated."""
        x, y = self._unpack(batch)
        return self._d_loss(x, y) | {"g_loss": self._g_loss(len(x), y)}

    def forward(self, zy: Tensor) -> Tensor:
        return self.G(zy)


class CollapseGuard:
    """Stops training when D wins outright for `epochs` epochs in a row: it tells apart >= `acc`
    of the real AND of the fake images, and G's loss is >= `g_loss` (D(G(z)) below e^-g_loss on
    the geometric mean: 0.03 % at 8). D's accuracy alone is not enough: with the non-saturating
    loss G keeps improving while D is still right on nearly every image (measured here: D >=
    99.5 % for most of the first 10 epochs of a run whose samples become digits, G loss 3-6).
    When G's loss climbs as well, G no longer catches up (its gradient has vanished, or it
    collapsed to what D rejects). A trainer `on_epoch_end` callback."""

    def __init__(self, epochs: int, acc: float = 0.99, g_loss: float = 8.0):
        self.epochs, self.acc, self.g_loss, self.streak = epochs, acc, g_loss, 0

    def __call__(self, epoch: int, m: dict[str, float]) -> None:
        won = (
            m["d_acc_real"] >= self.acc
            and m["d_acc_fake"] >= self.acc
            and m["g_loss"] >= self.g_loss
        )
        self.streak = self.streak + 1 if won else 0
        if self.streak >= self.epochs:
            raise GANCollapseError(
                f"D won outright for {self.streak} epochs (epoch {epoch}: accuracy "
                f"{m['d_acc_real']:.3f} on real, {m['d_acc_fake']:.3f} on fake, G loss "
                f"{m['g_loss']:.2f} >= {self.g_loss:g}): G no longer catches up. Lower "
                "gan.d_steps or gan.lr_d, raise gan.lr_g, or weaken D (gan.real_label < 1, "
                "gan.d_dropout > 0)"
            )
