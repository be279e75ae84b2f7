"""Domain pairs: a labelled source and a target brought to one image size and channel count."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adaptflow.data.base import DataError, Split, resize


def _to_format(x: np.ndarray, side: int, channels: int) -> np.ndarray:
    if x.ndim != 4:
        raise DataError(f"domain pairs need images (N, C, H, W), got {x.shape}")
    x = resize(x, side)
    if x.shape[1] == channels:
        return x
    if channels == 3 and x.shape[1] == 1:
        return np.repeat(x, 3, axis=1)
    if channels == 1 and x.shape[1] == 3:  # ITU-R 601 luma, as PIL's convert('L')
        w = np.array([0.299, 0.587, 0.114], np.float32).reshape(1, 3, 1, 1)
        return (x * w).sum(1, keepdims=True)
    raise DataError(f"cannot map {x.shape[1]} channels to {channels}")


def conform(split: Split, side: int, channels: int) -> Split:
    return Split(
        _to_format(split.x_train, side, channels),
        split.y_train,
        _to_format(split.x_test, side, channels),
        split.y_test,
        split.meta,
    )


@dataclass(frozen=True)
class DomainPair:
    """source (labelled) -> target (labels used only for evaluation) in a common format."""

    source: Split
    target: Split
    side: int
    channels: int

    @classmethod
    def build(
        cls, source: Split, target: Split, side: int | None = None, channels: int | None = None
    ):
        side = side or max(source.x_train.shape[-1], target.x_train.shape[-1])
        channels = channels or max(source.x_train.shape[1], target.x_train.shape[1])
        if source.num_classes != target.num_classes:
            raise DataError(
                f"source has {source.num_classes} classes, target {target.num_classes}: "
                "not one task"
            )
        return cls(conform(source, side, channels), conform(target, side, channels), side, channels)
