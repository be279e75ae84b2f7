"""DCGAN generator and discriminator for 28×28 grayscale digits (Radford et al. 2016), with an
optional class condition (cGAN, Mirza & Osindero 2014).

DCGAN's rules: strided (transposed) convolutions instead of pooling, BatchNorm in G (not on its
output) and in D (not on its input), ReLU in G with a sigmoid output (the images are in [0, 1]),
LeakyReLU(0.2) in D, which returns a logit. Conditioning: G reads [z, one-hot(y)] as one input
vector (so the logged generator is a plain `x -> image` module); D gets one-hot(y) as constant
label planes beside the image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Generator(nn.Module):
    """z (+ one-hot y) -> (1, 28, 28): linear to (2c, 7, 7), two stride-2 transposed convs."""

    def __init__(self, z_dim: int = 64, n_classes: int = 0, channels: int = 32):
        super().__init__()
        self.z_dim, self.n_classes, c = z_dim, n_classes, channels
        self.project = nn.Sequential(
            nn.Linear(z_dim + n_classes, 2 * c * 7 * 7, bias=False),
            nn.BatchNorm1d(2 * c * 7 * 7),
            nn.ReLU(),
        )
        self.net = nn.Sequential(
            nn.ConvTranspose2d(2 * c, c, 4, 2, 1, bias=False),  # 7 -> 14
            nn.BatchNorm2d(c),
            nn.ReLU(),
            nn.ConvTranspose2d(c, 1, 4, 2, 1),  # 14 -> 28
            nn.Sigmoid(),
        )
        self.apply(dcgan_init)

    @property
    def in_dim(self) -> int:
        return self.z_dim + self.n_classes

    def forward(self, zy: Tensor) -> Tensor:
        """`zy`: (N, z_dim + n_classes), the noise with the one-hot class appended (cGAN)."""
        h = self.project(zy)
        return self.net(h.view(len(zy), -1, 7, 7))

    def inputs(self, n: int, y: Tensor | None = None, generator=None) -> Tensor:
        """N standard-normal codes, with one-hot(y) appended when conditional."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.z_dim, generator=generator, device="cpu").to(device)
        if not self.n_classes:
            return z
        if y is None:
            raise ValueError("a conditional generator needs the class of each sample")
        return torch.cat([z, F.one_hot(y.to(device).long(), self.n_classes).float()], 1)

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None, seed: int = 0, batch: int = 500) -> Tensor:
        """n images (on the CPU) from seeded noise, in eval mode (BatchNorm's running stats)."""
        was = self.training
        self.eval()
        g = torch.Generator().manual_seed(seed)
        out = []
        for i in range(0, n, batch):
            yi = None if y is None else y[i : i + batch]
            out.append(self(self.inputs(min(batch, n - i), yi, g)).float().cpu())
        self.train(was)
        return torch.cat(out)


class Discriminator(nn.Module):
    """(1 [+ K label planes], 28, 28) -> a logit: two stride-2 convs and a linear layer."""

    def __init__(self, n_classes: int = 0, channels: int = 32, dropout: float = 0.0):
        """`dropout` after each conv block weakens D (so it does not win outright on small
        data), as in TensorFlow's DCGAN tutorial for MNIST."""
        super().__init__()
        self.n_classes, c = n_classes, channels
        self.net = nn.Sequential(
            nn.Conv2d(1 + n_classes, c, 4, 2, 1),  # 28 -> 14, no BatchNorm on the input layer
            nn.LeakyReLU(0.2),
            nn.Dropout(dropout),
            nn.Conv2d(c, 2 * c, 4, 2, 1, bias=False),  # 14 -> 7
            nn.BatchNorm2d(2 * c),
            nn.LeakyReLU(0.2),
            nn.Dropout(dropout),
            nn.Flatten(),
            nn.Linear(2 * c * 7 * 7, 1),
        )
        self.apply(dcgan_init)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        if self.n_classes:
            if y is None:
                raise ValueError("a conditional discriminator needs the class of each image")
            planes = F.one_hot(y.long(), self.n_classes).to(x.dtype)[:, :, None, None]
            x = torch.cat([x, planes.expand(-1, -1, *x.shape[2:])], 1)
        return self.net(x).squeeze(1)


def dcgan_init(m: nn.Module) -> None:
    """DCGAN's initialisation: weights ~ N(0, 0.02), BatchNorm scales ~ N(1, 0.02)."""
    if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)
