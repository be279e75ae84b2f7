"""The data side of domain adaptation: feature vectors, svmlight, label values, optional sources
and DomainPair (class matching by value, layouts, standardisation)."""

import copy
import json
import pickle

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image
from pydantic import TypeAdapter
from sklearn.datasets import dump_svmlight_file

from adaptflow.config import SourceConfig, build_params
from adaptflow.data import SOURCES, DataError, SkippedSource, Split, load_prepared, prepare_all
from adaptflow.data.pairs import DomainPair

from ..conftest import shared_file

VALUES = [3, 7, 11]  # label values with gaps: codes 0..2 must map back to them


@pytest.fixture
def prepare(raw_params, tmp_path):
    """prepare(name=cfg, ...) -> (params, log lines): runs the DVC stage on these sources only."""

    def run(**sources):
        raw = copy.deepcopy(raw_params)
        raw["data"]["prepared_dir"] = str(tmp_path / "prepared")
        as_text = lambda c: {k: str(v) if k.endswith("path") else v for k, v in c.items()}  # noqa: E731
        raw["data"]["sources"].update({name: as_text(c) for name, c in sources.items()})
        params = build_params(raw)
        lines: list[str] = []
        prepare_all(params, list(sources), log=lines.append)
        return params, lines

    return run


def source_config(**cfg):
    """A validated data-source config, as params.yaml would give it."""
    return TypeAdapter(SourceConfig).validate_python(cfg)


def load(params, name) -> Split:
    return load_prepared(params.data.prepared_dir, name).split


def table(n=36, d=5, seed=0):
    """Feature vectors in [-5, 300] (quarters: exact in float32 and in text) and labels."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-20, 1201, (n, d)) / 4
    x[0, 0], x[1, 1] = -5.0, 300.0
    return x, np.array(VALUES * (n // len(VALUES)))


def pixels(n=36, seed=0):
    """16x16 grey images as 0..255 integers, one flattened row each."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 256)), np.array(VALUES * (n // len(VALUES)))


def rows(split: Split, scale: float | None = None) -> list:
    """Every example of train+test as (values, original label), sorted: nothing lost or
    duplicated, each label still with its own example. scale: images back to 0..255."""
    x = np.concatenate([split.x_train, split.x_test])
    x = x.reshape(len(x), -1).astype(np.float64)
    if scale:
        x = np.rint(x * scale)
    codes = np.concatenate([split.y_train, split.y_test])
    values = split.meta["label_values"]
    return sorted((tuple(r), values[c]) for r, c in zip(x.tolist(), codes, strict=True))


def written(x, y) -> list:
    return sorted(
        (tuple(r), v) for r, v in zip(np.asarray(x, np.float64).tolist(), y.tolist(), strict=True)
    )


# ---------------------------------------------------------------- writers: one per file format
def npz_vectors(tmp_path, x, y):
    np.savez(tmp_path / "v.npz", X=x, y=y)
    return {"kind": "npz", "path": tmp_path / "v.npz", "layout": "vector"}


def mat_v5_vectors(tmp_path, x, y):  # MATLAB's features x samples, labels as a column
    scipy.io.savemat(tmp_path / "v.mat", {"fts": x.T, "labels": y.reshape(-1, 1)})
    return {"kind": "mat", "path": tmp_path / "v.mat", "layout": "vector"}


def mat_v73_vectors(tmp_path, x, y):  # v7.3 is HDF5: h5py shows samples first
    with h5py.File(tmp_path / "v.mat", "w") as f:
        f["Xt"], f["Yt"] = x, y.reshape(1, -1).astype(np.float64)
    return {"kind": "mat", "path": tmp_path / "v.mat", "layout": "vector", "side": "target"}


def svmlight_vectors(tmp_path, x, y):
    dump_svmlight_file(x, y, str(tmp_path / "v.svm"))
    return {"kind": "svmlight", "path": tmp_path / "v.svm"}


def npz_images(tmp_path, x, y):
    np.savez(tmp_path / "i.npz", X=x.astype(np.uint8), y=y)
    return {"kind": "npz", "path": tmp_path / "i.npz"}


def mat_v5_images(tmp_path, x, y):
    scipy.io.savemat(tmp_path / "i.mat", {"X": x.astype(np.float64), "Y": y.reshape(-1, 1)})
    return {"kind": "mat", "path": tmp_path / "i.mat"}


def usps_h5_images(tmp_path, x, y):  # the real file: float32 in [0, 1], given train/test
    with h5py.File(tmp_path / "u.h5", "w") as f:
        for part, rows_ in (("train", slice(0, 24)), ("test", slice(24, None))):
            f[f"{part}/data"] = (x[rows_] / 255).astype(np.float32)
            f[f"{part}/target"] = y[rows_].astype(np.int32)
    return {"kind": "usps_h5", "path": tmp_path / "u.h5"}


def folder_images(tmp_path, x, y):  # folders named by number: '11' sorts after '7'
    for i, (r, v) in enumerate(zip(x, y, strict=True)):
        (tmp_path / "imgs" / str(v)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(r.reshape(16, 16).astype(np.uint8)).save(tmp_path / "imgs" / f"{v}/{i}.png")
    return {"kind": "image_folder", "path": tmp_path / "imgs", "size": 16}


@pytest.mark.parametrize(
    "write",
    [npz_vectors, mat_v5_vectors, mat_v73_vectors, svmlight_vectors],
    ids=lambda w: w.__name__,
)
def test_vector_files_round_trip_unscaled(prepare, tmp_path, write):
    x, y = table()
    params, _ = prepare(d=write(tmp_path, x, y))
    s = load(params, "d")
    assert s.x_train.shape[1:] == (5,) and s.layout == s.meta["layout"] == "vector"
    assert rows(s) == written(x, y)  # values as written: no [0, 1] rescaling
    assert s.meta["label_values"] == VALUES and s.num_classes == 3
    assert set(np.unique(s.y_train)) == {0, 1, 2}
    manifest = json.loads((params.data.prepared_dir / "d.json").read_text())
    assert manifest["x_range"] == [-5.0, 300.0]


@pytest.mark.parametrize(
    "write", [npz_images, mat_v5_images, usps_h5_images, folder_images], ids=lambda w: w.__name__
)
def test_image_files_round_trip(prepare, tmp_path, write):
    x, y = pixels()
    params, _ = prepare(d=write(tmp_path, x, y))
    s = load(params, "d")
    assert s.x_train.shape[1:] == (1, 16, 16) and s.meta["layout"] == "image"
    assert rows(s, scale=255) == written(x, y)  # pixels / 255, each with its own label
    assert s.meta["label_values"] == VALUES


def test_svmlight_with_a_test_file_shares_features_and_keeps_the_split(prepare, tmp_path):
    x, y = table()
    x_tr, x_te = x[:24, :3], x[24:]  # the training file never mentions features 3 and 4
    dump_svmlight_file(x_tr, y[:24], str(tmp_path / "train.svm"))
    dump_svmlight_file(x_te, y[24:], str(tmp_path / "test.svm"))
    cfg = {"kind": "svmlight", "path": tmp_path / "train.svm", "test_path": tmp_path / "test.svm"}
    params, _ = prepare(d=cfg)
    s = load(params, "d")
    assert s.x_train.shape == (24, 5) and s.x_test.shape == (12, 5)
    np.testing.assert_array_equal(s.x_train[:, :3], x_tr)
    np.testing.assert_array_equal(s.x_train[:, 3:], 0)
    np.testing.assert_array_equal(s.x_test, x_te)
    assert [VALUES[c] for c in s.y_test] == y[24:].tolist()
    assert s.meta["test_origin"] == str(tmp_path / "test.svm")


def test_label_values_span_train_and_test(tmp_path):
    """A class seen only in the test file still gets its own code, the same in both splits."""
    x, _ = table(n=6)
    dump_svmlight_file(x[:4], np.array([2, 5, 2, 5]), str(tmp_path / "a.svm"))
    dump_svmlight_file(x[4:], np.array([9, 5]), str(tmp_path / "b.svm"))
    cfg = source_config(
        kind="svmlight", path=tmp_path / "a.svm", test_path=tmp_path / "b.svm", label_offset=-2
    )
    s = SOURCES.get("svmlight")(cfg, 0)
    assert s.meta["label_values"] == [0, 3, 7]
    assert s.y_train.tolist() == [0, 1, 0, 1] and s.y_test.tolist() == [2, 1]


def test_image_folder_labels_by_folder_name(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("dog", "cat"):
        (tmp_path / cls).mkdir()
        for i in range(4):
            img = rng.integers(0, 255, (10, 10), dtype=np.uint8)
            Image.fromarray(img).save(tmp_path / cls / f"{i}.png")
    cfg = {"kind": "image_folder", "path": tmp_path, "size": 8, "test_fraction": 0.5}
    s = SOURCES.get("image_folder")(source_config(**cfg), 0)
    assert s.meta["label_values"] == s.meta["classes"] == ["cat", "dog"]
    with pytest.raises(DataError, match="label_offset: 0"):
        SOURCES.get("image_folder")(source_config(**cfg, label_offset=1), 0)


# ---------------------------------------------------------------- malformed files
def truncated_npz(tmp_path):
    np.savez(tmp_path / "t.npz", X=np.zeros((50, 4)), y=np.zeros(50))
    data = (tmp_path / "t.npz").read_bytes()
    (tmp_path / "t.npz").write_bytes(data[: len(data) // 2])
    return {"kind": "npz", "path": tmp_path / "t.npz"}, "numpy.savez"


def npz_wrong_keys(tmp_path):
    np.savez(tmp_path / "k.npz", features=np.zeros((6, 4)), target=np.zeros(6))
    return {"kind": "npz", "path": tmp_path / "k.npz"}, r"keys present.*set x_key / y_key"


def garbage_mat(tmp_path):
    (tmp_path / "g.mat").write_bytes(b"MATLAB? no." * 40)
    return {"kind": "mat", "path": tmp_path / "g.mat"}, "scipy.io.savemat"


def mat_wrong_keys(tmp_path):
    scipy.io.savemat(tmp_path / "w.mat", {"A": np.zeros((4, 4)), "B": np.zeros(4)})
    return {"kind": "mat", "path": tmp_path / "w.mat"}, r"\['A', 'B'\].*set x_key and y_key"


def garbage_svmlight_line(tmp_path):
    (tmp_path / "g.svm").write_text("3 1:0.5 2:1\n7 1:oops 2:4\n")
    return {"kind": "svmlight", "path": tmp_path / "g.svm"}, r"line 2 .*<label> <index>:<value>"


def unsorted_svmlight_indices(tmp_path):
    (tmp_path / "u.svm").write_text("3 1:0.5 2:1\n# fine\n7 4:1 2:4\n")
    return {"kind": "svmlight", "path": tmp_path / "u.svm"}, r"line 3 .*increasing indices"


def non_integer_labels(tmp_path):
    np.savez(tmp_path / "f.npz", X=np.zeros((6, 4)), y=np.array([0, 1, 0.5, 1, 0, 1]))
    return {"kind": "npz", "path": tmp_path / "f.npz", "layout": "vector"}, "whole numbers"


def string_labels(tmp_path):
    np.savez(tmp_path / "s.npz", X=np.zeros((4, 4)), y=np.array(["a", "b", "a", "b"]))
    return {"kind": "npz", "path": tmp_path / "s.npz", "layout": "vector"}, "integer class ids"


def one_dim_vectors(tmp_path):
    np.savez(tmp_path / "o.npz", X=np.arange(6.0), y=np.arange(6) % 2)
    return {"kind": "npz", "path": tmp_path / "o.npz", "layout": "vector"}, r"\(N, D\).*layout"


def non_finite_vectors(tmp_path):
    x = np.ones((6, 3))
    x[2, 1] = np.nan
    np.savez(tmp_path / "n.npz", X=x, y=np.arange(6) % 2)
    return {"kind": "npz", "path": tmp_path / "n.npz", "layout": "vector"}, "NaN or inf"


def vectors_read_as_images(tmp_path):
    np.savez(tmp_path / "r.npz", X=np.ones((6, 10)), y=np.arange(6) % 2)
    return {"kind": "npz", "path": tmp_path / "r.npz"}, "set layout: vector"


def truncated_h5(tmp_path):
    import h5py

    with h5py.File(tmp_path / "u.h5", "w") as f:
        for part in ("train", "test"):
            f.create_dataset(f"{part}/data", data=np.zeros((20, 256)))
            f.create_dataset(f"{part}/target", data=np.arange(20) % 10)
    data = (tmp_path / "u.h5").read_bytes()
    (tmp_path / "u.h5").write_bytes(data[: len(data) // 3])
    return {"kind": "usps_h5", "path": tmp_path / "u.h5"}, "not a USPS h5 file.*truncated"


def truncated_svmlight(tmp_path):
    (tmp_path / "t.svm").write_text("3 1:0.5 2:1\n7 1:0.25 2:")  # cut in the middle of a pair
    return {
        "kind": "svmlight",
        "path": tmp_path / "t.svm",
    }, r"t\.svm: line 2 '7 1:0\.25 2:' is not svm"


def nan_pixels(tmp_path):
    x = np.random.default_rng(0).random((6, 8, 8))
    x[3, 4, 4] = np.nan
    np.savez(tmp_path / "p.npz", X=x, y=np.arange(6) % 2)
    return {"kind": "npz", "path": tmp_path / "p.npz"}, "NaN or inf"


def images_of_a_wrong_shape(tmp_path):
    np.savez(tmp_path / "w.npz", X=np.zeros((6, 2, 3, 4, 5)), y=np.arange(6) % 2)
    return {"kind": "npz", "path": tmp_path / "w.npz"}, r"shape"


def empty_image_folder(tmp_path):
    (tmp_path / "imgs" / "cat").mkdir(parents=True)
    (tmp_path / "imgs" / "dog").mkdir()
    return {"kind": "image_folder", "path": tmp_path / "imgs"}, "one sub-folder of images per class"


@pytest.mark.parametrize(
    "make",
    [
        truncated_h5,
        truncated_svmlight,
        nan_pixels,
        images_of_a_wrong_shape,
        empty_image_folder,
        truncated_npz,
        npz_wrong_keys,
        garbage_mat,
        mat_wrong_keys,
        garbage_svmlight_line,
        unsorted_svmlight_indices,
        non_integer_labels,
        string_labels,
        one_dim_vectors,
        non_finite_vectors,
        vectors_read_as_images,
    ],
    ids=lambda m: m.__name__,
)
def test_malformed_file_error_names_the_file_and_the_fix(tmp_path, make):
    raw, fix = make(tmp_path)
    cfg = source_config(**raw)
    with pytest.raises(DataError, match=fix) as err:
        SOURCES.get(cfg.kind)(cfg, 0)
    assert str(raw["path"]) in str(err.value)


# ---------------------------------------------------------------- optional sources
def test_optional_missing_source_is_skipped_with_its_reason(prepare, tmp_path):
    x, y = table()
    cfg = npz_vectors(tmp_path, x, y) | {"optional": True}
    params, _ = prepare(d=cfg)
    npz_path = params.data.prepared_dir / "d.npz"
    assert npz_path.is_file()
    (tmp_path / "v.npz").unlink()  # the file goes away: the old arrays must not be served

    _, log = prepare(d=cfg)
    assert not npz_path.exists()
    manifest = json.loads((params.data.prepared_dir / "d.json").read_text())
    assert manifest == {"name": "d", "skipped": manifest["skipped"]}
    assert str(tmp_path / "v.npz") in manifest["skipped"]
    assert log == [f"skipped d: {manifest['skipped']}"]
    with pytest.raises(SkippedSource) as err:
        load_prepared(params.data.prepared_dir, "d")
    assert err.value.reason == manifest["skipped"] and isinstance(err.value, DataError)
    assert pickle.loads(pickle.dumps(err.value)).reason == err.value.reason
    assert not list(params.data.prepared_dir.glob("*.tmp"))


def test_optional_source_missing_only_its_test_file_is_skipped(prepare, tmp_path):
    x, y = table()
    dump_svmlight_file(x, y, str(tmp_path / "train.svm"))
    cfg = {"kind": "svmlight", "path": tmp_path / "train.svm", "optional": True}
    params, log = prepare(d=cfg | {"test_path": tmp_path / "absent.svm"})
    with pytest.raises(SkippedSource, match="absent.svm"):
        load_prepared(params.data.prepared_dir, "d")
    assert "train.svm" not in log[0]  # the reason names what is missing, not what is there


def test_missing_required_source_is_an_error(prepare, tmp_path):
    with pytest.raises(DataError, match="does not exist.*optional: true"):
        prepare(d={"kind": "npz", "path": tmp_path / "nope.npz"})
    assert not (tmp_path / "prepared" / "d.json").exists()


# ---------------------------------------------------------------- domain pairs
def vectors(values, x_train, x_test=None, codes_train=None, codes_test=None) -> Split:
    """A vector Split whose label values are `values`; codes default to 0, 1, 2, ... cycled."""
    x_train = np.asarray(x_train, np.float32)
    x_test = np.asarray(x_train if x_test is None else x_test, np.float32)
    k = len(values)
    cycle = lambda n: np.arange(n) % k  # noqa: E731
    y_tr = np.asarray(cycle(len(x_train)) if codes_train is None else codes_train, np.int64)
    y_te = np.asarray(cycle(len(x_test)) if codes_test is None else codes_test, np.int64)
    return Split(x_train, y_tr, x_test, y_te, {"layout": "vector", "label_values": list(values)})


def test_class_set_mismatch_names_both_sets():
    src, tgt = vectors([0, 1, 2], np.zeros((6, 2))), vectors([0, 1, 5], np.zeros((6, 2)))
    with pytest.raises(DataError) as err:
        DomainPair.build(src, tgt)
    msg = str(err.value)
    assert "source [0, 1, 2]" in msg and "target [0, 1, 5]" in msg
    assert "only in source: [2]; only in target: [5]" in msg
    assert "label_offset" not in msg  # not a shift: no misleading hint


def test_label_offset_fixes_a_one_based_vs_zero_based_pair(prepare, tmp_path):
    """MATLAB labels 1..3 against 0..2: the error says which offset, and the offset works.
    Feature 0 of every example is its class (0-based), so matched codes can be checked."""
    y = np.arange(30) % 3
    x = np.column_stack([y, np.arange(30)]).astype(np.float64)
    scipy.io.savemat(tmp_path / "m.mat", {"X": x, "Y": (y + 1).reshape(-1, 1)})
    np.savez(tmp_path / "z.npz", X=x[::-1], y=y[::-1])
    mat = {"kind": "mat", "path": tmp_path / "m.mat", "layout": "vector"}
    npz = {"kind": "npz", "path": tmp_path / "z.npz", "layout": "vector"}
    params, _ = prepare(m=mat, z=npz)
    with pytest.raises(DataError, match=r"labels are the source's -1: set label_offset: -1"):
        DomainPair.build(load(params, "m"), load(params, "z"))

    params, _ = prepare(m=mat | {"label_offset": -1}, z=npz)
    pair = DomainPair.build(load(params, "m"), load(params, "z"))
    assert pair.classes == (0, 1, 2) and pair.source.meta["label_offset"] == -1
    for s in (pair.source, pair.target):
        for x_, y_ in ((s.x_train, s.y_train), (s.x_test, s.y_test)):
            np.testing.assert_array_equal(x_[:, 0], y_)


def test_pair_recodes_the_target_by_label_value():
    """Same classes listed in another order: equal values get equal codes, x stays put."""
    src = vectors([10, 20, 30], [[10.0], [20.0], [30.0]])  # feature = label value
    tgt = vectors([30, 10, 20], [[30.0], [10.0], [20.0], [30.0]], [[20.0]], [0, 1, 2, 0], [2])
    pair = DomainPair.build(src, tgt)
    assert pair.classes == (10, 20, 30) and pair.num_classes == 3
    classes = np.array(pair.classes)
    for s in (pair.source, pair.target):
        np.testing.assert_array_equal(classes[s.y_train], s.x_train[:, 0])
        np.testing.assert_array_equal(classes[s.y_test], s.x_test[:, 0])
    assert pair.target.meta["label_values"] == [10, 20, 30]


def test_pair_of_embedded_and_file_sources_compares_codes_as_values():
    """A source without label_values means codes 0..K-1 (embedded sources)."""
    bare = Split(np.zeros((4, 3), np.float32), np.arange(4) % 2, np.zeros((2, 3), np.float32),
                 np.arange(2), {})  # fmt: skip
    pair = DomainPair.build(bare, vectors([0, 1], np.ones((4, 3))))
    assert pair.classes == (0, 1)
    with pytest.raises(DataError, match=r"label_offset: 1 on the source"):
        DomainPair.build(bare, vectors([1, 2], np.ones((4, 3))))


def test_standardize_source_statistics():
    src = vectors([0, 1], [[1.0, 0.0], [3.0, 4.0]], [[5.0, 2.0]])  # mean (2, 2), std (1, 2)
    tgt = vectors([0, 1], [[0.0, 0.0], [10.0, 20.0]], [[5.0, 30.0]])
    pair = DomainPair.build(src, tgt, standardize="source")
    np.testing.assert_allclose(pair.source.x_train, [[-1, -1], [1, 1]])
    np.testing.assert_allclose(pair.source.x_test, [[3, 0]])
    np.testing.assert_allclose(pair.target.x_train, [[-2, -1], [8, 9]])
    np.testing.assert_allclose(pair.target.x_test, [[3, 14]])
    assert pair.source.x_train.dtype == np.float32
    assert pair.preprocessing == {
        "standardize": "source",
        "fit_on": "source train",
        "n_fit": 2,
        "constant": 0,
    }


def test_standardize_per_domain_statistics():
    src = vectors([0, 1], [[1.0, 0.0], [3.0, 4.0]], [[5.0, 2.0]])
    tgt = vectors([0, 1], [[0.0, 0.0], [10.0, 20.0]], [[5.0, 30.0]])  # mean (5, 10), std (5, 10)
    pair = DomainPair.build(src, tgt, standardize="per_domain")
    np.testing.assert_allclose(pair.source.x_train, [[-1, -1], [1, 1]])
    np.testing.assert_allclose(pair.target.x_train, [[-1, -1], [1, 1]])
    np.testing.assert_allclose(pair.target.x_test, [[0, 2]])  # test uses train statistics
    np.testing.assert_array_equal(pair.target.y_train, tgt.y_train)  # labels untouched
    assert pair.preprocessing["standardize"] == "per_domain"
    assert pair.preprocessing["n_fit_target"] == 2


def test_standardize_only_centres_a_constant_feature():
    src = vectors([0, 1], [[1.0, 7.0], [3.0, 7.0]])
    tgt = vectors([0, 1], [[1.0, 7.0], [3.0, 7.5]])
    pair = DomainPair.build(src, tgt, standardize="source")
    np.testing.assert_allclose(pair.source.x_train[:, 1], 0)
    np.testing.assert_allclose(pair.target.x_train[:, 1], [0, 0.5], rtol=1e-6)  # scale 1
    assert pair.preprocessing["constant"] == 1


def test_pair_layouts_and_shapes():
    img = Split(np.zeros((4, 1, 8, 8), np.float32), np.arange(4) % 2,
                np.zeros((2, 1, 8, 8), np.float32), np.arange(2))  # fmt: skip
    vec = vectors([0, 1], np.zeros((4, 64)))
    with pytest.raises(DataError, match=r"source is images .* target is feature vectors \(N, D\)"):
        DomainPair.build(img, vec)
    with pytest.raises(DataError, match=r"source has 64 features .* target 3"):
        DomainPair.build(vec, vectors([0, 1], np.zeros((4, 3))))
    with pytest.raises(DataError, match="standardize='source' is for feature vectors"):
        DomainPair.build(img, img, standardize="source")
    pair = DomainPair.build(vec, vec)
    assert (pair.layout, pair.input_shape, pair.side, pair.channels) == (
        "vector",
        (64,),
        None,
        None,
    )
    pair = DomainPair.build(img, img, side=12, channels=3)
    assert (pair.layout, pair.input_shape) == ("image", (3, 12, 12))
    assert pair.source.x_train.shape == (4, 3, 12, 12)


def test_split_holds_feature_vectors_as_they_are():
    x = np.array([[-5.0, 300.0], [0.5, 2.0]], np.float32)
    s = Split(x, np.array([0, 1]), x, np.array([1, 0]))
    assert s.layout == "vector" and s.x_train is x
    with pytest.raises(DataError, match="NaN or inf"):
        Split(np.array([[np.inf, 1.0]], np.float32), np.array([0]), x, np.array([0, 1]))
    with pytest.raises(DataError, match="meta says layout 'image'"):
        Split(x, np.array([0, 1]), x, np.array([1, 0]), {"layout": "image"})


@pytest.mark.parametrize("layout", ["image", "vector"])
def test_real_mnist_vs_usps_pair(prepare, layout):
    """JDA's MNIST->USPS file: two sources (side source / target) of ONE v7.3 file."""
    path = shared_file("MNIST_vs_USPS.mat")
    one = {"kind": "mat", "path": path, "layout": layout, "label_offset": -1}
    params, _ = prepare(mnist_s=one | {"side": "source"}, usps_t=one | {"side": "target"})
    src, tgt = load(params, "mnist_s"), load(params, "usps_t")
    pair = DomainPair.build(src, tgt, standardize="none" if layout == "image" else "per_domain")
    assert pair.classes == tuple(range(10))  # label k is digit k-1 (the README)
    s, t = pair.source, pair.target
    assert len(s.x_train) + len(s.x_test) == 2000 and len(t.x_train) + len(t.x_test) == 1800
    counts = np.bincount(np.concatenate([s.y_train, s.y_test]))
    assert counts.tolist() == [196, 227, 207, 202, 196, 179, 191, 206, 195, 201]
    counts = np.bincount(np.concatenate([t.y_train, t.y_test]))
    assert counts.tolist() == [352, 241, 165, 166, 166, 126, 139, 172, 129, 144]
    if layout == "image":
        assert pair.input_shape == (1, 16, 16) and pair.side == 16
    else:
        assert pair.input_shape == (256,)
        assert abs(float(t.x_train.mean())) < 1e-4  # the target's own statistics
