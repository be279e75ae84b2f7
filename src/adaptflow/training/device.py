"""Device choice (cuda, then mps, then cpu) and seeding."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from adaptflow.config import ParamsError


class DeviceUnavailableError(ParamsError):
    """`device` names an accelerator this machine does not have (a param to change: exit 2)."""


def resolve_device(preference: str = "auto") -> torch.device:
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            "device: 'cuda' asked for but no CUDA GPU is visible "
            "(torch.cuda.is_available() is False); use device: auto (or cpu)"
        )
    if preference == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailableError(
            "device: 'mps' asked for but MPS is not available; use device: auto (or cpu)"
        )
    return torch.device(preference)


def seed_everything(seed: int) -> None:
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too
