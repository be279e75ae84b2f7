"""The sequence models the `seq` stage compares with its Transformer (seed Q8): recurrent nets
(LSTM, GRU) that read a sequence one step at a time, and a 1-D CNN. All take (batch, channels,
length) and return class logits, like `attention.TransformerClassifier`."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from adaptflow.models.attention import TransformerClassifier


class RecurrentClassifier(nn.Module):
    """An LSTM or GRU over the steps; its last hidden state -> a linear head."""

    def __init__(self, kind: Literal["lstm", "gru"], in_channels: int, hidden: int, n_classes: int):
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[kind]
        self.rnn = rnn(in_channels, hidden, batch_first=True)
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x.transpose(1, 2))  # (b, L, hidden): step t needs step t - 1 first
        return self.head(out[:, -1])


class ConvClassifier1d(nn.Module):
    """Three conv(5) + ReLU layers (the last two with stride 2), global mean pool, linear head:
    the shape of MNIST-1D's reference CNN (Greydanus 2020)."""

    def __init__(self, in_channels: int, channels: int, n_classes: int):
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Conv1d(in_channels, c, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(c, c, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.Conv1d(c, c, 5, stride=2, padding=2),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),
            nn.Flatten(),
            nn.Linear(c, n_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


SEQUENCE_MODELS = ("transformer", "lstm", "gru", "cnn")


def build_sequence_model(
    name: str, cfg, in_channels: int, n_classes: int, max_len: int
) -> nn.Module:
    """One of SEQUENCE_MODELS with the sizes of `cfg` (a SeqModelConfig)."""
    if name == "transformer":
        return TransformerClassifier(
            in_channels,
            n_classes,
            max_len,
            d_model=cfg.d_model,
            heads=cfg.heads,
            layers=cfg.layers,
            d_ff=cfg.d_ff,
            dropout=cfg.dropout,
            positional=cfg.positional,
            pooling=cfg.pooling,
            pre_norm=cfg.pre_norm,
        )
    if name in ("lstm", "gru"):
        return RecurrentClassifier(name, in_channels, cfg.hidden, n_classes)
    if name == "cnn":
        return ConvClassifier1d(in_channels, cfg.cnn_channels, n_classes)
    raise ValueError(f"unknown sequence model {name!r}; valid: {', '.join(SEQUENCE_MODELS)}")
