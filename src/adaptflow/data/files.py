"""File sources for users' own data: npz, MATLAB .mat (v5 and v7.3), USPS h5, image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adaptflow.data.base import (
    SOURCES,
    DataError,
    Split,
    labels_from_zero,
    stratified_split,
    to_unit_images,
)

MAT_X_KEYS = ("Xs", "fts", "X", "data", "features")
MAT_Y_KEYS = ("Ys", "labels", "label", "y", "Y")


def _exists(path: Path, kind: str) -> Path:
    if not path.exists():
        raise DataError(
            f"{kind} source: {path} does not exist (fix data.sources.*.path in params.yaml)"
        )
    return path


def _split(x: np.ndarray, y: np.ndarray, cfg, seed: int, meta: dict) -> Split:
    if len(x) != len(y):
        raise DataError(f"{meta['origin']}: {len(x)} examples but {len(y)} labels")
    x_tr, y_tr, x_te, y_te = stratified_split(
        to_unit_images(x), labels_from_zero(y), cfg.test_fraction, seed
    )
    return Split(x_tr, y_tr, x_te, y_te, meta)


@SOURCES.register("npz")
def npz(cfg, seed: int) -> Split:
    path = _exists(cfg.path, "npz")
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in (cfg.x_key, cfg.y_key) if k not in f.files]
        if missing:
            raise DataError(
                f"{path}: no key {missing}; keys present: {f.files} (set x_key / y_key)"
            )
        x, y = f[cfg.x_key], f[cfg.y_key]
    return _split(x, y, cfg, seed, {"origin": str(path)})


def read_mat(path: Path) -> dict[str, np.ndarray]:
    """Numeric arrays of a .mat file, v5 (scipy) or v7.3 (HDF5, h5py), samples first."""
    import h5py
    import scipy.io

    if h5py.is_hdf5(path):  # v7.3 files are HDF5 (scipy refuses them)
        with h5py.File(path, "r") as f:  # h5py reverses MATLAB's axes: samples come first
            return {k: f[k][()] for k in f.keys() if isinstance(f[k], h5py.Dataset)}
    try:
        raw = scipy.io.loadmat(path)
    except (ValueError, NotImplementedError, OSError) as e:
        raise DataError(f"{path}: not a readable MATLAB file ({e})") from None
    return {k: np.asarray(v) for k, v in raw.items() if not k.startswith("__")}


@SOURCES.register("mat")
def mat(cfg, seed: int) -> Split:
    path = _exists(cfg.path, "mat")
    arrays = read_mat(path)
    side_x = {"source": "Xs", "target": "Xt"}.get(cfg.side)
    side_y = {"source": "Ys", "target": "Yt"}.get(cfg.side)
    x_key = cfg.x_key or next((k for k in (side_x, *MAT_X_KEYS) if k in arrays), None)
    y_key = cfg.y_key or next((k for k in (side_y, *MAT_Y_KEYS) if k in arrays), None)
    if x_key not in arrays or y_key not in arrays:
        raise DataError(
            f"{path}: cannot find features/labels (keys: {sorted(arrays)}); set x_key and y_key"
        )
    x, y = arrays[x_key], np.asarray(arrays[y_key]).reshape(-1)
    if x.ndim == 2 and x.shape[0] != len(y) and x.shape[1] == len(y):
        x = x.T  # features x samples (MATLAB convention in v5 files)
    return _split(x, y, cfg, seed, {"origin": str(path), "x_key": x_key, "y_key": y_key})


@SOURCES.register("usps_h5")
def usps_h5(cfg, seed: int) -> Split:
    import h5py

    path = _exists(cfg.path, "usps_h5")
    try:
        with h5py.File(path, "r") as f:
            parts = [f[k][()] for k in ("train/data", "train/target", "test/data", "test/target")]
    except (OSError, KeyError) as e:
        raise DataError(
            f"{path}: not a USPS h5 file with train/ and test/ data+target ({e})"
        ) from None
    x_tr, y_tr, x_te, y_te = parts
    return Split(
        to_unit_images(x_tr, 16),
        labels_from_zero(y_tr),
        to_unit_images(x_te, 16),
        labels_from_zero(y_te),
        {"origin": str(path)},
    )


@SOURCES.register("image_folder")
def image_folder(cfg, seed: int) -> Split:
    import torch
    from torchvision import datasets
    from torchvision.transforms import v2 as T

    root = _exists(cfg.path, "image_folder")
    tf = T.Compose(
        [
            T.Grayscale(1) if cfg.channels == 1 else T.RGB(),
            T.Resize((cfg.size, cfg.size), antialias=True),
            T.ToImage(),
            T.ToDtype(torch.float32, scale=True),
        ]
    )
    try:
        ds = datasets.ImageFolder(str(root), transform=tf)
    except (FileNotFoundError, RuntimeError) as e:
        raise DataError(f"{root}: expected one sub-folder of images per class ({e})") from None
    x = torch.stack([ds[i][0] for i in range(len(ds))]).numpy()
    y = np.asarray(ds.targets, np.int64)
    meta = {"origin": str(root), "classes": ds.classes}
    x_tr, y_tr, x_te, y_te = stratified_split(x, y, cfg.test_fraction, seed)
    return Split(x_tr, y_tr, x_te, y_te, meta)
