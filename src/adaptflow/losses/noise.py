"""Input corruptions for denoising autoencoders (seed Q2: x_tilde = x + noise, or masking)."""

from __future__ import annotations

import torch


def gaussian(
    x: torch.Tensor, sigma: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=generator, device="cpu").to(x.device, x.dtype)
    return (x + sigma * noise).clamp(0, 1)


def masking(x: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero each pixel independently with probability p (Vincent et al. 2008 masking noise)."""
    keep = torch.rand(x.shape, generator=generator, device="cpu").to(x.device) >= p
    return x * keep


def corrupt(
    x: torch.Tensor, kind: str, level: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    if kind == "gaussian":
        return gaussian(x, level, generator)
    if kind == "masking":
        return masking(x, level, generator)
    raise ValueError(f"unknown noise {kind!r}; valid: gaussian, masking")
