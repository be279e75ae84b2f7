"""A Transformer encoder written from the seed's equations (Q8; Vaswani et al. 2017).

    Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V
    MultiHead(X) = Concat(head_1, …, head_h) W_O,   head_i = Attention(X W_Q_i, X W_K_i, X W_V_i)
    PE(pos, 2i) = sin(pos / 10000^(2i/d)),   PE(pos, 2i+1) = cos(pos / 10000^(2i/d))
    each sub-layer: LayerNorm(x + Sublayer(x))   (post-norm, as in the paper; `pre_norm` optional)

Written by hand on purpose: this is what the `seq` stage measures (its tests check it against
torch's `scaled_dot_product_attention` and `nn.MultiheadAttention` with copied weights). Shapes
are batch-first: x (batch, length, d_model); `pad` (batch, length) is True at padding positions,
which no query attends to and mean pooling leaves out.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn


def attention(
    q: Tensor, k: Tensor, v: Tensor, pad: Tensor | None = None, dropout: nn.Module | None = None
) -> tuple[Tensor, Tensor]:
    """softmax(Q Kᵀ / √d_k) V over the last two dims: (output, attention weights).
    q (…, L_q, d_k), k (…, L_k, d_k), v (…, L_k, d_v); `pad` (batch, L_k) masks keys;
    `dropout` drops attention weights (training only), where torch's attention drops them."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if pad is not None:  # (batch, L_k) -> broadcast over heads and queries
        keys = pad.reshape(pad.size(0), *([1] * (scores.dim() - 2)), pad.size(-1))
        scores = scores.masked_fill(keys, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return (weights if dropout is None else dropout(weights)) @ v, weights


class MultiHeadAttention(nn.Module):
    """h heads of d_model / h dimensions each, projections W_Q, W_K, W_V and W_O."""

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model = {d_model} is not divisible by heads = {heads}")
        self.heads, self.d_k = heads, d_model // heads
        self.w_q, self.w_k, self.w_v = (nn.Linear(d_model, d_model) for _ in range(3))
        self.w_o = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: Tensor) -> Tensor:  # (b, L, d_model) -> (b, h, L, d_k)
        return x.view(x.size(0), x.size(1), self.heads, self.d_k).transpose(1, 2)

    def forward(self, x: Tensor, pad: Tensor | None = None) -> tuple[Tensor, Tensor]:
        q, k, v = self._split(self.w_q(x)), self._split(self.w_k(x)), self._split(self.w_v(x))
        out, weights = attention(q, k, v, pad, self.dropout)
        out = out.transpose(1, 2).reshape(x.size(0), x.size(1), -1)  # Concat(head_1..head_h)
        return self.w_o(out), weights

    @torch.no_grad()
    def load_from_torch(self, mha: nn.MultiheadAttention) -> MultiHeadAttention:
        """Copy the weights of torch's module (its packed in_proj = [W_Q; W_K; W_V])."""
        d = self.w_q.in_features
        for i, lin in enumerate((self.w_q, self.w_k, self.w_v)):
            lin.weight.copy_(mha.in_proj_weight[i * d : (i + 1) * d])
            lin.bias.copy_(mha.in_proj_bias[i * d : (i + 1) * d])
        self.w_o.weight.copy_(mha.out_proj.weight)
        self.w_o.bias.copy_(mha.out_proj.bias)
        return self


def sinusoidal_encoding(length: int, d_model: int) -> Tensor:
    """PE (length, d_model): sin on even dimensions, cos on odd ones, wavelengths 2π…10000·2π."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]
    i2 = torch.arange(0, d_model, 2, dtype=torch.float32)  # the 2i of the formula
    angle = pos / torch.pow(10000.0, i2 / d_model)
    pe = torch.zeros(length, d_model)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return pe


class EncoderLayer(nn.Module):
    """Self-attention and a position-wise feed-forward net, each inside a residual + LayerNorm."""

    def __init__(self, d_model: int, heads: int, d_ff: int, dropout: float, pre_norm: bool):
        super().__init__()
        self.attn = MultiHeadAttention(d_model, heads, dropout)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Linear(d_ff, d_model))
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, x: Tensor, pad: Tensor | None = None) -> Tensor:
        if self.pre_norm:  # x + Sublayer(LN(x)): steadier for deep stacks (Xiong et al. 2020)
            x = x + self.drop(self.attn(self.norm1(x), pad)[0])
            return x + self.drop(self.ff(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attn(x, pad)[0]))  # LN(x + Sublayer(x)): the paper's
        return self.norm2(x + self.drop(self.ff(x)))


class TransformerClassifier(nn.Module):
    """Sequence (batch, channels, length) -> class logits: a linear embedding of each step,
    positional encoding (sinusoidal or learned), `layers` encoder layers, then a classification
    token or the mean over (unpadded) positions, and a linear head."""

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        max_len: int,
        d_model: int = 64,
        heads: int = 4,
        layers: int = 2,
        d_ff: int = 128,
        dropout: float = 0.0,
        positional: Literal["sinusoidal", "learned"] = "sinusoidal",
        pooling: Literal["cls", "mean"] = "cls",
        pre_norm: bool = False,
    ):
        super().__init__()
        self.embed = nn.Linear(in_channels, d_model)
        self.pooling = pooling
        extra = 1 if pooling == "cls" else 0
        if positional == "sinusoidal":
            self.register_buffer("pe", sinusoidal_encoding(max_len + extra, d_model))
        elif positional == "learned":
            self.pe = nn.Parameter(torch.randn(max_len + extra, d_model) * 0.02)
        else:
            raise ValueError(f"positional = {positional!r}: sinusoidal or learned")
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling = {pooling!r}: cls or mean")
        self.cls = nn.Parameter(torch.zeros(1, 1, d_model)) if pooling == "cls" else None
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, heads, d_ff, dropout, pre_norm) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(d_model) if pre_norm else nn.Identity()
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, x: Tensor, pad: Tensor | None = None) -> Tensor:
        if self.cls is None and pad is not None and bool(pad.all(dim=1).any()):
            raise ValueError(  # no key to attend to: softmax over nothing is NaN
                "a sequence is padding at every step; drop it (mean pooling has nothing to average)"
            )
        h = self.embed(x.transpose(1, 2))  # (b, L, d_model)
        if self.cls is not None:
            h = torch.cat([self.cls.expand(h.size(0), -1, -1), h], dim=1)
            if pad is not None:  # the token itself is never padding
                pad = torch.cat([pad.new_zeros(pad.size(0), 1), pad], dim=1)
        if h.size(1) > self.pe.size(0):
            raise ValueError(
                f"sequence of {x.size(-1)} steps; this model was built for at most "
                f"{self.pe.size(0) - (self.cls is not None)} (max_len)"
            )
        h = h + self.pe[: h.size(1)]
        for layer in self.layers:
            h = layer(h, pad)
        h = self.norm(h)
        if self.cls is not None:
            return self.head(h[:, 0])
        if pad is None:
            return self.head(h.mean(dim=1))
        keep = (~pad).unsqueeze(-1).to(h.dtype)
        return self.head((h * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1.0))
