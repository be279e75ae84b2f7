import json

import numpy as np
import pytest

from adaptflow.config import build_params
from adaptflow.data import DataError, load_prepared, prepare_all
from adaptflow.data.pairs import DomainPair
from adaptflow.data.prepare import file_digests


@pytest.fixture
def params(raw_params, tmp_path):
    raw_params["data"]["prepared_dir"] = str(tmp_path / "prepared")
    raw_params["data"]["sources"]["syndigits"].update(n_train=200, n_test=50)
    return build_params(raw_params)


def test_prepare_writes_npz_and_manifest(params):
    out = prepare_all(params, ["digits", "syndigits"], log=lambda m: None)
    man = json.loads((params.data.prepared_dir / "digits.json").read_text())
    assert man == out["digits"]
    assert man["shapes"]["x_train"][1:] == [1, 28, 28]
    assert sum(man["class_counts"]["train"]) + sum(man["class_counts"]["test"]) == 1797
    assert len(man["md5"]) == 32 and len(man["sha256"]) == 64
    p = load_prepared(params.data.prepared_dir, "syndigits")
    assert p.digest == out["syndigits"]["md5"] and p.split.x_train.shape == (200, 1, 28, 28)
    assert not list(params.data.prepared_dir.glob("*.tmp"))  # atomic writes leave no temp files


def test_prepare_is_byte_deterministic(params):
    a = prepare_all(params, ["syndigits"], log=lambda m: None)["syndigits"]["md5"]
    b = prepare_all(params, ["syndigits"], log=lambda m: None)["syndigits"]["md5"]
    assert a == b  # so dvc.lock stays valid on a fresh clone


def test_missing_and_corrupt_prepared_name_the_fix(params):
    with pytest.raises(DataError, match=r"'mnist' is missing .*mnist\.json.*make data"):
        load_prepared(params.data.prepared_dir, "mnist")
    prepare_all(params, ["digits"], log=lambda m: None)
    path = params.data.prepared_dir / "digits.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    # the digest check, not the zip reader's CRC, names it (it runs before any reading)
    edited = r"digits\.npz does not match its manifest \(corrupt or edited\); run `make data`"
    with pytest.raises(DataError, match=edited):
        load_prepared(params.data.prepared_dir, "digits")
    (params.data.prepared_dir / "digits.json").write_text("{ truncated")
    with pytest.raises(DataError, match=r"manifest .*digits\.json is corrupt; run `make data`"):
        load_prepared(params.data.prepared_dir, "digits")


def test_unknown_source_name(params):
    with pytest.raises(DataError, match="configured"):
        prepare_all(params, ["nope"], log=lambda m: None)


def test_domain_pair_common_format(params):
    prepare_all(params, ["digits", "syndigits"], log=lambda m: None)
    src = load_prepared(params.data.prepared_dir, "syndigits").split
    tgt = load_prepared(params.data.prepared_dir, "digits").split
    pair = DomainPair.build(src, tgt, side=32, channels=3)
    assert pair.source.x_train.shape[1:] == pair.target.x_test.shape[1:] == (3, 32, 32)
    gray = DomainPair.build(src, tgt, side=16)
    assert gray.source.x_train.shape[1:] == (1, 16, 16)
    assert np.allclose(pair.source.x_train[:, 0], pair.source.x_train[:, 2])


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (lambda a: a["x_train"].__setitem__((0, 0, 0, 0), np.nan), "x_train holds NaN"),
        (lambda a: a["y_test"].__setitem__(0, 10), "labels outside the class codes 0..9"),
        (lambda a: a.__setitem__("y_train", a["y_train"][:-1]), "y_train has shape"),
    ],
    ids=["nan pixel", "label out of range", "short labels"],
)
def test_a_prepared_file_with_a_matching_digest_is_still_checked(params, edit, says):
    """A file rewritten with a manifest to match (a buggy or hand-edited prepare) passes the
    digest check; its arrays are checked too, and the error names the file and `make data`."""
    prepare_all(params, ["digits"], log=lambda m: None)
    d = params.data.prepared_dir
    with np.load(d / "digits.npz") as f:
        arrays = {k: f[k].copy() for k in f.files}
    edit(arrays)
    np.savez(d / "digits.npz", **arrays)
    manifest = json.loads((d / "digits.json").read_text())
    manifest["md5"] = file_digests(d / "digits.npz")[0]
    (d / "digits.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="make data") as err:
        load_prepared(d, "digits")
    assert says in str(err.value) and "digits.npz" in str(err.value)
