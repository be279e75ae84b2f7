"""Small feature extractors for domain adaptation: a LeNet-style CNN for digit images and an MLP
for feature-vector inputs (chosen automatically for 1-D inputs). timm backbones come from
`models.backbones` instead."""

from __future__ import annotations

from torch import nn


class LeNet(nn.Module):
    """Conv(1→32, 5×5)-ReLU-MaxPool2, Conv(32→64, 5×5)-ReLU-MaxPool2, Linear→`dim`-ReLU: the
    digit DA benchmarks' network (skada/tllib style), for any square input side."""

    def __init__(self, in_chans: int, side: int, dim: int = 128):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_chans, 32, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.fc = nn.Sequential(nn.Linear(64 * (side // 4) ** 2, dim), nn.ReLU())
        self.dim = dim

    def forward(self, x):
        return self.fc(self.conv(x))


class MLPFeaturizer(nn.Module):
    """Linear-ReLU layers for feature vectors (N, D)."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...] = (256,), dim: int = 128):
        super().__init__()
        layers, width = [], in_dim
        for h in (*hidden, dim):
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.net = nn.Sequential(*layers)
        self.dim = dim

    def forward(self, x):
        return self.net(x.flatten(1))


class TimmFeaturizer(nn.Module):
    """A timm backbone's pooled pre-logit features (`forward_head(..., pre_logits=True)`)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.dim = net.num_features

    def forward(self, x):
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True)


class Standardize(nn.Module):
    """(x − mean) / std with fixed statistics: the z-scoring a pair applied to its target
    inputs, carried inside a served model so it takes raw feature vectors."""

    def __init__(self, mean, std):
        super().__init__()
        import torch

        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x):
        return (x - self.mean) / self.std


def build_featurizer(input_shape: tuple[int, ...], dim: int = 128) -> nn.Module:
    """LeNet for images (C, H, W) with H = W divisible by 4, an MLP for vectors (D,)."""
    if len(input_shape) == 1:
        return MLPFeaturizer(input_shape[0], dim=dim)
    c, h, w = input_shape
    if h != w or h % 4:
        raise ValueError(f"LeNet needs square images with a side divisible by 4, got {h}x{w}")
    return LeNet(c, h, dim)
