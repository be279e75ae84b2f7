"""Small conv encoder/decoder for images: stride-2 convs halve the side per block (DCGAN-style)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from adaptflow.models.mlp import ACTIVATIONS


def _check(input_shape: Sequence[int], blocks: int) -> tuple[int, int, int]:
    c, h, w = input_shape
    if h % (2**blocks) or w % (2**blocks):
        raise ValueError(
            f"conv arch: image side {h}x{w} must be divisible by {2**blocks} "
            f"({blocks} stride-2 blocks); use arch mlp or fewer conv_channels"
        )
    return c, h // 2**blocks, w // 2**blocks


class ConvEncoder(nn.Module):
    def __init__(self, input_shape, channels: Sequence[int], out_dim: int, out_act: str = "none"):
        super().__init__()
        c, h, w = _check(input_shape, len(channels))
        layers: list[nn.Module] = []
        for c_in, c_out in zip([input_shape[0], *channels[:-1]], channels, strict=True):
            layers += [
                nn.Conv2d(c_in, c_out, 4, stride=2, padding=1),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
            ]
        self.net = nn.Sequential(
            *layers, nn.Flatten(), nn.Linear(channels[-1] * h * w, out_dim), ACTIVATIONS[out_act]()
        )

    def forward(self, x):
        return self.net(x)


class ConvDecoder(nn.Module):
    """Outputs logits shaped like the input image."""

    def __init__(self, output_shape, channels: Sequence[int], code_size: int):
        super().__init__()
        c, h, w = _check(output_shape, len(channels))
        rev = list(reversed(channels))
        self.start = (rev[0], h, w)
        layers: list[nn.Module] = [nn.Linear(code_size, rev[0] * h * w), nn.ReLU()]
        self.fc = nn.Sequential(*layers)
        ups: list[nn.Module] = []
        for c_in, c_out in zip(rev, rev[1:], strict=False):
            ups += [
                nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
            ]
        ups.append(nn.ConvTranspose2d(rev[-1], output_shape[0], 4, stride=2, padding=1))
        self.net = nn.Sequential(*ups)

    @property
    def output_bias(self):
        return self.net[-1].bias

    def forward(self, z):
        return self.net(self.fc(z).view(-1, *self.start))
