"""The uniform in-memory format every source returns, and the helpers that produce it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from adaptflow.registry import Registry


class DataError(ValueError):
    """Bad or missing data: the message names the file/key and the fix."""


LAYOUTS = {4: "image", 3: "sequence", 2: "vector"}


@dataclass(frozen=True)
class Split:
    """x as images (N, C, H, W) float32 in [0, 1], sequences (N, C, L) or feature vectors (N, D)
    (values as they are, finite); y int64 codes 0..K-1.

    meta: "origin"; "layout" (image | sequence | vector); file sources add "label_values"
    (label_values[k] is the original label of code k; without it code k stands for k).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for part in ("train", "test"):
            x, y = getattr(self, f"x_{part}"), getattr(self, f"y_{part}")
            if x.dtype != np.float32 or y.dtype != np.int64:
                raise DataError(f"{part}: expected float32 x / int64 y, got {x.dtype} / {y.dtype}")
            if x.ndim not in LAYOUTS or y.ndim != 1 or len(x) != len(y):
                raise DataError(f"{part}: x {x.shape} and y {y.shape} do not form N examples")
            if x.ndim == 2 and not np.isfinite(x).all():
                raise DataError(f"{part}: feature vectors contain NaN or inf values")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(
                f"train examples {self.x_train.shape[1:]} and test examples "
                f"{self.x_test.shape[1:]} differ in shape"
            )
        declared = self.meta.get("layout")
        if declared is not None and declared != self.layout:
            raise DataError(f"meta says layout {declared!r} but x has shape {self.x_train.shape}")

    @property
    def layout(self) -> str:
        return LAYOUTS[self.x_train.ndim]

    @property
    def num_classes(self) -> int:
        if "label_values" in self.meta:
            return len(self.meta["label_values"])
        return int(max(self.y_train.max(), self.y_test.max())) + 1


SOURCES: Registry = Registry("data source")


def to_unit_images(x: np.ndarray, side: int | None = None) -> np.ndarray:
    """Any (N, D=side*side) / (N, H, W) / (N, C, H, W) array -> (N, C, H, W) float32 in [0, 1]."""
    x = np.asarray(x)
    if x.ndim == 2:
        side = side or int(round(np.sqrt(x.shape[1])))
        if side * side != x.shape[1]:
            raise DataError(
                f"rows of {x.shape[1]} values are not square images; give the image side"
            )
        x = x.reshape(len(x), 1, side, side)
    elif x.ndim == 3:
        x = x[:, None]
    elif x.ndim != 4:
        raise DataError(f"cannot read images of shape {x.shape}")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataError("images contain NaN or inf values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        if lo >= 0 and hi <= 255:
            x = x / 255.0
        else:  # e.g. standardised features: rescale to [0, 1] globally (keeps relative contrast)
            x = (x - lo) / max(hi - lo, 1e-12)
    return np.clip(x, 0.0, 1.0)


def labels_from_zero(y: np.ndarray) -> np.ndarray:
    """Labels as int64 0..K-1; 1-based MATLAB labels (1..K) are shifted down."""
    y = np.asarray(y).reshape(-1)
    if not np.all(np.isfinite(y.astype(np.float64))) or not np.all(np.mod(y, 1) == 0):
        raise DataError("labels must be whole numbers")
    y = y.astype(np.int64)
    if y.min() == 1 and 0 not in y:
        y = y - 1
    if y.min() < 0:
        raise DataError(f"labels must be >= 0 (or 1-based), found {y.min()}")
    return y


def resize(x: np.ndarray, side: int) -> np.ndarray:
    if x.shape[-1] == side and x.shape[-2] == side:
        return x
    import torch
    from torchvision.transforms.v2 import functional as TF

    t = TF.resize(torch.from_numpy(x), [side, side], antialias=True)
    return t.clamp_(0, 1).numpy()


def frame_like_mnist(x: np.ndarray, side: int = 28) -> np.ndarray:
    """Scale the whole image to 20/28 of `side` and pad it centred: MNIST's 20x20-in-28x28 framing.

    Without it an 8x8 digit stretched over 28x28 differs from MNIST mostly by geometry, and a
    domain-adaptation method can 'win' just by fixing that (see shared REFERENCES.md).
    """
    inner = round(side * 20 / 28)
    x = resize(x, inner)
    pad = side - inner
    return np.pad(x, ((0, 0), (0, 0), (pad // 2, pad - pad // 2), (pad // 2, pad - pad // 2)))


def stratified_split(
    x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 else None
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=stratify
    )
    return x_tr, y_tr, x_te, y_te
