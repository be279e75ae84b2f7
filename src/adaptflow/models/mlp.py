"""MLP encoder/decoder blocks for flattened images: h = f(W x + b) per layer (the seed's Q1)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "none": nn.Identity}


def mlp(sizes: Sequence[int], hidden_act: str = "relu", out_act: str = "none") -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        layers.append(nn.Linear(a, b))
        last = i == len(sizes) - 2
        layers.append(ACTIVATIONS[out_act if last else hidden_act]())
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    def __init__(
        self, input_shape: Sequence[int], hidden: Sequence[int], code_size: int, code_act: str
    ):
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.net = nn.Sequential(
            nn.Flatten(), mlp([math.prod(input_shape), *hidden, code_size], "relu", code_act)
        )

    def forward(self, x):
        return self.net(x)


class Decoder(nn.Module):
    """Outputs logits; x_hat = sigmoid(logits) is the g of the seed's decoder (images in [0,1])."""

    def __init__(self, output_shape: Sequence[int], hidden: Sequence[int], code_size: int):
        super().__init__()
        self.output_shape = tuple(output_shape)
        self.net = mlp([code_size, *reversed(hidden), math.prod(output_shape)], "relu", "none")

    @property
    def output_bias(self):
        return self.net[-2].bias

    def forward(self, z):
        return self.net(z).view(-1, *self.output_shape)
