"""A deep MLP built from layer blocks, with a classifier head: the net greedy pretraining fills."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from adaptflow.models.mlp import ACTIVATIONS


class StackedEncoder(nn.Module):
    """input -> Linear+act per layer (784-500-250-100 by default); `blocks[k]` is layer k+1."""

    def __init__(self, input_dim: int, layers: Sequence[int], activation: str = "sigmoid"):
        super().__init__()
        dims = [input_dim, *layers]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), ACTIVATIONS[activation]())
            for a, b in zip(dims[:-1], dims[1:], strict=True)
        )

    def forward(self, x: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        h = x.flatten(1)
        for block in self.blocks[:upto]:
            h = block(h)
        return h

    def load_layer(self, k: int, weight: torch.Tensor, bias: torch.Tensor) -> None:
        lin = self.blocks[k][0]
        if lin.weight.shape != weight.shape:
            raise ValueError(
                f"layer {k + 1}: pretrained weight {tuple(weight.shape)} != {tuple(lin.weight.shape)}"
            )
        with torch.no_grad():
            lin.weight.copy_(weight)
            lin.bias.copy_(bias)


class DeepClassifier(nn.Module):
    def __init__(self, encoder: StackedEncoder, n_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.blocks[-1][0].out_features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))
