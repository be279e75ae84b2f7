"""Every data source: shapes, value range, determinism, label set — on real (small) data."""

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from adaptflow.config import (
    DigitsSource,
    ImageFolderSource,
    MatSource,
    Mnist1dSource,
    MnistSource,
    NpzSource,
    SynDigitsSource,
    UspsH5Source,
)
from adaptflow.data import SOURCES, DataError

from ..conftest import shared_file


def load(cfg, seed=0):
    return SOURCES.get(cfg.kind)(cfg, seed)


def check_images(split, side, n_classes=10, channels=1):
    for x, y in ((split.x_train, split.y_train), (split.x_test, split.y_test)):
        assert x.shape[1:] == (channels, side, side)
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5
    assert set(np.unique(split.y_train)) == set(range(n_classes))
    assert set(np.unique(split.y_test)) == set(range(n_classes))


def test_mnist_subset():
    s = load(MnistSource(kind="mnist", test_fraction=0.2))
    check_images(s, 28)
    assert len(s.x_train) == 4000 and len(s.x_test) == 1000
    # stratified: the label-sorted source must not leak into a one-class test set
    assert np.bincount(s.y_test).min() >= 80


def test_digits_framing_and_native_size():
    framed = load(DigitsSource(kind="digits", size=28, framing="mnist"))
    check_images(framed, 28)
    # MNIST framing: a 4-px empty border, like MNIST's 20x20 digit in 28x28
    assert framed.x_train[:, :, :3, :].max() < 0.05 and framed.x_train[:, :, :, -3:].max() < 0.05
    native = load(DigitsSource(kind="digits", size=8))
    check_images(native, 8)
    assert len(native.x_train) + len(native.x_test) == 1797


def test_syndigits_deterministic_any_size():
    cfg = SynDigitsSource(kind="syndigits", n_train=300, n_test=100, size=28)
    a, b, c = load(cfg, 1), load(cfg, 1), load(cfg, 2)
    check_images(a, 28)
    assert len(a.x_train) == 300 and len(a.x_test) == 100
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.x_train, c.x_train)
    assert not np.array_equal(a.x_train[:100], a.x_test)  # test is a different draw
    assert len(a.meta["fonts"]) >= 15 and not any("Display" in f for f in a.meta["fonts"])
    small = load(SynDigitsSource(kind="syndigits", n_train=20, n_test=20, size=16), 0)
    assert small.x_train.shape[1:] == (1, 16, 16)


def test_mnist1d_offline_sequences():
    s = load(Mnist1dSource(kind="mnist1d", num_samples=500), 0)
    assert s.x_train.shape == (400, 1, 40) and s.x_test.shape == (100, 1, 40)
    assert set(np.unique(s.y_train)) <= set(range(10))
    np.testing.assert_array_equal(
        s.x_train, load(Mnist1dSource(kind="mnist1d", num_samples=500), 0).x_train
    )


def test_mnist1d_leaves_global_rng_alone():
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    load(Mnist1dSource(kind="mnist1d", num_samples=200), 0)
    assert np.random.rand() == expected


def _toy(n=60, side=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, side * side)).astype(np.float64), np.arange(n) % classes


def test_npz_source(tmp_path):
    x, y = _toy()
    np.savez(tmp_path / "d.npz", X=x, y=y)
    s = load(NpzSource(kind="npz", path=tmp_path / "d.npz"))
    check_images(s, 8, n_classes=3)
    with pytest.raises(DataError, match="keys present"):
        load(NpzSource(kind="npz", path=tmp_path / "d.npz", x_key="features"))
    with pytest.raises(DataError, match="does not exist"):
        load(NpzSource(kind="npz", path=tmp_path / "none.npz"))


def labelled_rows(split) -> set[tuple]:
    """Every example of train+test as (pixel values 0..255, label): the split lost nothing,
    duplicated nothing and kept each label with its own image."""
    x = np.concatenate([split.x_train, split.x_test]).reshape(-1, 64)
    y = np.concatenate([split.y_train, split.y_test])
    rows = {(*np.rint(r * 255).astype(int).tolist(), int(c)) for r, c in zip(x, y, strict=True)}
    assert len(rows) == len(x)
    return rows


def expected_rows(x, y) -> set[tuple]:
    return {(*r.astype(int).tolist(), int(c)) for r, c in zip(x, y, strict=True)}


def test_mat_v5_features_by_samples_and_one_based_labels(tmp_path):
    x, y = _toy()
    scipy.io.savemat(tmp_path / "d.mat", {"fts": x.T, "labels": (y + 1).reshape(-1, 1)})
    s = load(MatSource(kind="mat", path=tmp_path / "d.mat"))
    check_images(s, 8, n_classes=3)
    # transposed back to samples x features, 1-based labels shifted to 0..2, pixels / 255
    assert labelled_rows(s) == expected_rows(x, y)


def test_mat_v73_via_h5py(tmp_path):
    x_s, y_s = _toy(classes=2, seed=0)
    x_t, _ = _toy(classes=2, seed=1)  # another draw: no target row equals a source row
    y_t = (np.arange(len(x_t)) + 1) % 2  # and other labels: a mixed-up key would show
    with h5py.File(tmp_path / "d.mat", "w") as f:  # a v7.3 file is HDF5; scipy refuses it
        f["Xs"], f["Ys"] = x_s, (y_s + 1).reshape(1, -1).astype(np.float64)
        f["Xt"], f["Yt"] = x_t, (y_t + 1).reshape(1, -1).astype(np.float64)
    s = load(MatSource(kind="mat", path=tmp_path / "d.mat"))
    t = load(MatSource(kind="mat", path=tmp_path / "d.mat", side="target"))
    check_images(s, 8, n_classes=2)
    assert labelled_rows(s) == expected_rows(x_s, y_s)
    assert labelled_rows(t) == expected_rows(x_t, y_t)


def test_mat_corrupt_file(tmp_path):
    (tmp_path / "bad.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(DataError):
        load(MatSource(kind="mat", path=tmp_path / "bad.mat"))


def test_real_mnist_vs_usps_mat():
    path = shared_file("MNIST_vs_USPS.mat")
    s = load(MatSource(kind="mat", path=path, test_fraction=0.25))
    t = load(MatSource(kind="mat", path=path, side="target", test_fraction=0.25))
    check_images(s, 16)
    check_images(t, 16)
    assert len(s.x_train) + len(s.x_test) == 2000 and len(t.x_train) + len(t.x_test) == 1800


def test_usps_h5(tmp_path):
    x, y = _toy(n=40, side=16, classes=4)
    with h5py.File(tmp_path / "u.h5", "w") as f:
        for part in ("train", "test"):
            f[f"{part}/data"], f[f"{part}/target"] = (
                (x / 255).astype(np.float32),
                y.astype(np.int32),
            )
    s = load(UspsH5Source(kind="usps_h5", path=tmp_path / "u.h5"))
    check_images(s, 16, n_classes=4)
    (tmp_path / "bad.h5").write_bytes(b"nope")
    with pytest.raises(DataError, match="USPS h5"):
        load(UspsH5Source(kind="usps_h5", path=tmp_path / "bad.h5"))


def test_real_usps_h5():
    s = load(UspsH5Source(kind="usps_h5", path=shared_file("usps.h5")))
    check_images(s, 16)
    assert (len(s.x_train), len(s.x_test)) == (7291, 2007)
    assert np.bincount(s.y_test).tolist() == [359, 264, 198, 166, 200, 160, 170, 147, 166, 177]


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(
                tmp_path / cls / f"{i}.png"
            )
    s = load(ImageFolderSource(kind="image_folder", path=tmp_path, size=12, test_fraction=0.5))
    check_images(s, 12, n_classes=2)
    rgb = load(
        ImageFolderSource(
            kind="image_folder", path=tmp_path, size=12, channels=3, test_fraction=0.5
        )
    )
    assert rgb.x_train.shape[1] == 3


def test_synchars_renders_36_balanced_classes_deterministically():
    from adaptflow.config import SynCharsSource

    cfg = SynCharsSource(kind="synchars", n_train=360, n_test=72, size=28)
    a, b, c = load(cfg, 1), load(cfg, 1), load(cfg, 2)
    check_images(a, 28, n_classes=36)
    assert a.meta["classes"] == list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    assert np.bincount(a.y_train, minlength=36).tolist() == [10] * 36  # balanced
    assert np.bincount(a.y_test, minlength=36).tolist() == [2] * 36
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    assert not np.array_equal(a.y_train, c.y_train)  # another seed, another shuffle
    assert len(a.meta["fonts"]) >= 15  # the digit fonts all have A-Z too


def test_synchars_class_is_its_glyph():
    """An 'A' must look like the clean A glyph more than like any other class's glyph."""
    import torch

    from adaptflow.config import SynCharsSource
    from adaptflow.data.syndigits import glyph_bank

    cfg = SynCharsSource(
        kind="synchars", charset="0AX", n_train=300, n_test=30, noise=0.0, elastic=0.0
    )
    s = load(cfg, 0)
    bank, _ = glyph_bank(28, "0AX")
    templates = bank.mean(0).flatten(1).numpy()  # (3, 784): mean clean glyph per class
    x = s.x_train.reshape(len(s.x_train), -1)
    nearest = np.argmin(((x[:, None] - templates[None]) ** 2).sum(-1), axis=1)
    assert (nearest == s.y_train).mean() > 0.8, torch.tensor(nearest == s.y_train).float().mean()


def test_synchars_rejects_a_bad_charset():
    from pydantic import ValidationError

    from adaptflow.config import SynCharsSource

    for bad in ("A", "AA", "A B"):
        with pytest.raises(ValidationError, match="distinct, non-blank"):
            SynCharsSource(kind="synchars", charset=bad)


def test_elastic_distortion_is_smooth_seeded_and_off_at_zero():
    """elastic > 0 warps every image (same seed, same warp); 0 leaves the render untouched; the
    field is smooth (neighbouring pixels move together), not per-pixel noise."""
    import torch

    from adaptflow.data.syndigits import _elastic_field, glyph_bank, render

    bank, _ = glyph_bank(28, "0AX")
    kw = {"seed": 3, "side": 28, "noise": 0.0, "bank": bank}
    plain, y0, _ = render(40, **kw)
    zero, _, _ = render(40, elastic=0.0, **kw)
    warped, y1, _ = render(40, elastic=2.0, **kw)
    again, _, _ = render(40, elastic=2.0, **kw)
    np.testing.assert_array_equal(plain, zero)
    np.testing.assert_array_equal(warped, again)
    np.testing.assert_array_equal(y0, y1)  # the warp draws after labels and fonts
    changed = np.abs(warped - plain).reshape(40, -1).max(1)
    assert (changed > 0.1).all()

    field = _elastic_field(torch.Size([64, 1, 28, 28]), torch.Generator().manual_seed(0), 2.0)
    px = field * 14  # grid units -> pixels (28 px span 2 units)
    assert abs(px.std().item() - 2.0) < 0.2
    step = (px[:, 1:] - px[:, :-1]).abs().mean().item()  # neighbours move together
    assert step < 0.3 * px.abs().mean().item()
