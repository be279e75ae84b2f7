"""Encoder/decoder pairs by architecture name: the AE family builds its nets only through here."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from adaptflow.models.conv import ConvDecoder, ConvEncoder
from adaptflow.models.mlp import Decoder, Encoder

ARCHS = ("mlp", "conv")


@dataclass(frozen=True)
class NetSpec:
    input_shape: tuple[int, ...]
    arch: str = "mlp"
    hidden: tuple[int, ...] = (256,)
    conv_channels: tuple[int, ...] = (32, 64)
    code_size: int = 32


def build_encoder(spec: NetSpec, out_dim: int | None = None, out_act: str = "none") -> nn.Module:
    out_dim = out_dim or spec.code_size
    if spec.arch == "mlp":
        return Encoder(spec.input_shape, spec.hidden, out_dim, out_act)
    if spec.arch == "conv":
        return ConvEncoder(spec.input_shape, spec.conv_channels, out_dim, out_act)
    raise ValueError(f"unknown arch {spec.arch!r}; valid: {', '.join(ARCHS)}")


def build_decoder(spec: NetSpec) -> nn.Module:
    if spec.arch == "mlp":
        return Decoder(spec.input_shape, spec.hidden, spec.code_size)
    if spec.arch == "conv":
        return ConvDecoder(spec.input_shape, spec.conv_channels, spec.code_size)
    raise ValueError(f"unknown arch {spec.arch!r}; valid: {', '.join(ARCHS)}")
