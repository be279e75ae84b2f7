"""File sources for users' own data: npz, MATLAB .mat (v5 and v7.3), svmlight, USPS h5, image
folders.

Labels: `label_offset` is added to the file's labels, then the distinct values of train+test are
coded 0..K-1 in sorted order; meta["label_values"][k] is the value of code k, so two domains'
classes can be compared by value (see pairs.py).
"""

from __future__ import annotations

import zipfile
import zlib
from itertools import pairwise
from pathlib import Path

import numpy as np

from adaptflow.data.base import SOURCES, DataError, Split, stratified_split, to_unit_images

MAT_X_KEYS = ("Xs", "fts", "X", "data", "features")
MAT_Y_KEYS = ("Ys", "labels", "label", "y", "Y")


def _exists(path: Path, kind: str) -> Path:
    if not path.exists():
        raise DataError(
            f"{kind} source: {path} does not exist (fix data.sources.*.path in params.yaml, "
            "or set optional: true to skip it when absent)"
        )
    return path


def encode_labels(
    parts: list[np.ndarray], offset: int, origin: str
) -> tuple[list[np.ndarray], list[int]]:
    """Whole-number labels (+ offset) of every part -> int64 codes 0..K-1 and the K values."""
    parts = [np.asarray(y).reshape(-1) for y in parts]
    y_all = np.concatenate(parts)
    if y_all.size == 0:
        raise DataError(f"{origin}: no examples")
    if y_all.dtype.kind not in "biuf":
        raise DataError(
            f"{origin}: labels of type {y_all.dtype} are not numbers; store integer class ids"
        )
    if y_all.dtype.kind == "f":
        bad = ~np.isfinite(y_all) | (np.mod(np.nan_to_num(y_all), 1) != 0)
        if bad.any():
            raise DataError(
                f"{origin}: labels must be whole numbers (class ids), found "
                f"{y_all[bad][:3].tolist()}; store integer class ids (a regression target "
                "is not a class)"
            )
    values, codes = np.unique(y_all.astype(np.int64) + offset, return_inverse=True)
    bounds = np.cumsum([len(y) for y in parts])[:-1]
    return np.split(codes.astype(np.int64), bounds), values.tolist()


def _label_meta(values: list, offset: int) -> dict:
    return {"label_values": values, "label_offset": offset}


def _vectors(x: np.ndarray, origin: str) -> np.ndarray:
    if x.ndim != 2:
        raise DataError(
            f"{origin}: layout vector needs x of shape (N, D), got {x.shape}; store one feature "
            "vector per row, or set layout: image"
        )
    if x.dtype.kind not in "biuf":
        raise DataError(f"{origin}: features of type {x.dtype} are not numbers")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"{origin}: features contain NaN or inf values; impute or drop them")
    return x


def _images(x: np.ndarray, origin: str) -> np.ndarray:
    try:
        return to_unit_images(x)
    except (DataError, ValueError, TypeError) as e:
        raise DataError(f"{origin}: {e} (for feature vectors set layout: vector)") from None


def _split(x: np.ndarray, y: np.ndarray, cfg, seed: int, meta: dict) -> Split:
    origin = meta["origin"]
    if len(x) != len(y):
        raise DataError(f"{origin}: {len(x)} examples but {len(y)} labels (check x_key / y_key)")
    x = _vectors(x, origin) if cfg.layout == "vector" else _images(x, origin)
    [codes], values = encode_labels([y], cfg.label_offset, origin)
    x_tr, y_tr, x_te, y_te = stratified_split(x, codes, cfg.test_fraction, seed)
    meta = {**meta, "layout": cfg.layout, **_label_meta(values, cfg.label_offset)}
    return Split(x_tr, y_tr, x_te, y_te, meta)


@SOURCES.register("npz")
def npz(cfg, seed: int) -> Split:
    path = _exists(cfg.path, "npz")
    try:
        with np.load(path, allow_pickle=False) as f:
            keys = f.files
            arrays = {k: f[k] for k in (cfg.x_key, cfg.y_key) if k in keys}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(
            f"{path}: not a readable .npz file ({e}); write it again with numpy.savez "
            "(numeric arrays, no pickled objects)"
        ) from None
    missing = [k for k in (cfg.x_key, cfg.y_key) if k not in arrays]
    if missing:
        raise DataError(f"{path}: no key {missing}; keys present: {keys} (set x_key / y_key)")
    return _split(arrays[cfg.x_key], arrays[cfg.y_key], cfg, seed, {"origin": str(path)})


def read_mat(path: Path) -> dict[str, np.ndarray]:
    """Numeric arrays of a .mat file, v5 (scipy) or v7.3 (HDF5, h5py), samples first."""
    import h5py
    import scipy.io

    fix = "save it from MATLAB with `save(..., '-v7')` or `-v7.3`, or with scipy.io.savemat"
    if h5py.is_hdf5(path):  # v7.3 files are HDF5 (scipy refuses them)
        try:
            with h5py.File(path, "r") as f:  # h5py reverses MATLAB's axes: samples come first
                return {k: f[k][()] for k in f.keys() if isinstance(f[k], h5py.Dataset)}
        except (OSError, KeyError, ValueError) as e:
            raise DataError(f"{path}: unreadable MATLAB v7.3 (HDF5) file ({e}); {fix}") from None
    try:
        raw = scipy.io.loadmat(path)
    except (ValueError, NotImplementedError, OSError, TypeError) as e:
        raise DataError(f"{path}: not a readable MATLAB file ({e}); {fix}") from None
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


def _svmlight_line_ok(tokens: list[bytes]) -> bool:
    try:
        float(tokens[0])
        pairs = [t.split(b":") for t in tokens[1:] if not t.startswith(b"qid:")]
        indices = [int(index) for index, _ in pairs]
        [float(value) for _, value in pairs]
    except ValueError:
        return False
    return all(a < b for a, b in pairwise(indices))


def _first_bad_line(path: Path) -> tuple[int, str] | None:
    """The first line sklearn's parser rejects (its message does not say where)."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            tokens = raw.split(b"#", 1)[0].split()
            if tokens and not _svmlight_line_ok(tokens):
                return number, raw.decode(errors="replace").strip()[:80]
    return None


def _svmlight_error(paths: list[Path], e: Exception) -> DataError:
    fix = "each line must be `<label> <index>:<value> ...` with increasing indices"
    for path in paths:
        bad = _first_bad_line(path)
        if bad:
            return DataError(f"{path}: line {bad[0]} {bad[1]!r} is not svmlight ({e}); {fix}")
    names = " and ".join(str(p) for p in paths)
    return DataError(f"{names}: not readable as svmlight ({e}); {fix} (and check n_features)")


@SOURCES.register("svmlight")
def svmlight(cfg, seed: int) -> Split:
    from sklearn.datasets import load_svmlight_files

    paths = [_exists(cfg.path, "svmlight")]
    if cfg.test_path is not None:
        paths.append(_exists(cfg.test_path, "svmlight"))
    try:  # loaded together so that train and test share n_features
        loaded = load_svmlight_files(
            [str(p) for p in paths],
            n_features=cfg.n_features,
            zero_based=cfg.zero_based,
            dtype=np.float32,
        )
    except ValueError as e:
        raise _svmlight_error(paths, e) from None
    xs = [_vectors(x.toarray(), str(p)) for x, p in zip(loaded[::2], paths, strict=True)]
    origin = " + ".join(str(p) for p in paths)
    codes, values = encode_labels(list(loaded[1::2]), cfg.label_offset, origin)
    meta = {"origin": str(paths[0]), "layout": "vector", **_label_meta(values, cfg.label_offset)}
    if cfg.test_path is None:
        x_tr, y_tr, x_te, y_te = stratified_split(xs[0], codes[0], cfg.test_fraction, seed)
    else:
        (x_tr, x_te), (y_tr, y_te) = xs, codes
        meta["test_origin"] = str(paths[1])
    return Split(x_tr, y_tr, x_te, y_te, meta)


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
    (y_tr, y_te), values = encode_labels([y_tr, y_te], cfg.label_offset, str(path))
    meta = {"origin": str(path), "layout": "image", **_label_meta(values, cfg.label_offset)}
    return Split(to_unit_images(x_tr, 16), y_tr, to_unit_images(x_te, 16), y_te, meta)


def _folder_label_values(classes: list[str], offset: int, root: Path) -> list:
    """Folder names; integer names ('0'..'9') become numbers so they compare with other files."""
    if all(c.lstrip("-").isdigit() for c in classes):
        return [int(c) + offset for c in classes]
    if offset:
        raise DataError(
            f"{root}: label_offset={offset} needs integer folder names, found {classes[:5]}; "
            "set label_offset: 0 (class names are compared as they are)"
        )
    return list(classes)


def image_transform(channels: int, h: int, w: int):
    """PIL image -> float tensor (channels, h, w) in [0, 1]: how an image folder is read by
    `prepare` and by `adaptflow predict` alike."""
    import torch
    from torchvision.transforms import v2 as T

    return T.Compose(
        [
            T.Grayscale(1) if channels == 1 else T.RGB(),
            T.Resize((h, w), antialias=True),
            T.ToImage(),
            T.ToDtype(torch.float32, scale=True),
        ]
    )


@SOURCES.register("image_folder")
def image_folder(cfg, seed: int) -> Split:
    import torch
    from torchvision import datasets

    root = _exists(cfg.path, "image_folder")
    tf = image_transform(cfg.channels, cfg.size, cfg.size)
    try:
        ds = datasets.ImageFolder(str(root), transform=tf)
    except (FileNotFoundError, RuntimeError) as e:
        raise DataError(f"{root}: expected one sub-folder of images per class ({e})") from None
    images = []
    for i, (file, _) in enumerate(ds.samples):
        try:
            images.append(ds[i][0])
        except OSError as e:
            raise DataError(f"{file}: unreadable image ({e}); delete or re-save it") from None
    x = torch.stack(images).numpy()
    names = _folder_label_values(ds.classes, cfg.label_offset, root)
    if isinstance(names[0], str):  # ImageFolder codes the sorted folder names 0..K-1
        codes, values = np.asarray(ds.targets, np.int64), names
    else:  # by number: folder '10' after '9'
        [codes], values = encode_labels([np.asarray(names)[ds.targets]], 0, str(root))
    meta = {
        "origin": str(root),
        "layout": "image",
        "classes": [str(v) for v in values],
        **_label_meta(values, cfg.label_offset),
    }
    x_tr, y_tr, x_te, y_te = stratified_split(x, codes, cfg.test_fraction, seed)
    return Split(x_tr, y_tr, x_te, y_te, meta)
