"""Checkpoints are plain state_dicts, read back with weights_only=True (no pickled code runs)."""

from __future__ import annotations

import os
from pathlib import Path

import torch


class CheckpointError(ValueError):
    pass


def save_checkpoint(path: Path | str, model: torch.nn.Module, **extra) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"model": model.state_dict(), **extra}, tmp)
    os.replace(tmp, path)  # never a half-written checkpoint under the real name


def load_checkpoint(path: Path | str, model: torch.nn.Module, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated file, pickle with code, not a torch file...
        raise CheckpointError(
            f"checkpoint {path} cannot be read safely ({type(e).__name__}: {e})"
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(
            f"checkpoint {path} is not an adaptflow checkpoint (no 'model' state_dict)"
        )
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise CheckpointError(
            f"checkpoint {path} does not fit this model (was it trained with other params?): {e}"
        ) from None
    return state
