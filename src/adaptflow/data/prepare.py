"""DVC stage `prepare`: each configured source -> data/prepared/<name>.npz + <name>.json manifest.

An optional file source whose file is absent writes only <name>.json, {"name", "skipped": reason};
loading it raises SkippedSource, so a stage can skip with that reason.

Writes go to a temporary file renamed into place, so an interrupted run never leaves a
half-written dataset behind. The md5 in the manifest is the file's content md5, which is what
DVC records for the file; it is the digest MLflow shows for the dataset input.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaptflow.data.base import SOURCES, DataError, Split
from adaptflow.files import atomic_write

FIX = "run `make data` (or `dvc repro prepare`) to create it"


def file_digests(path: Path) -> tuple[str, str]:
    md5, sha = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def manifest_for(name: str, split: Split, md5: str, sha256: str) -> dict:
    return {
        "name": name,
        "md5": md5,
        "sha256": sha256,
        "shapes": {
            k: list(getattr(split, k).shape) for k in ("x_train", "y_train", "x_test", "y_test")
        },
        "num_classes": split.num_classes,
        "class_counts": {
            "train": np.bincount(split.y_train, minlength=split.num_classes).tolist(),
            "test": np.bincount(split.y_test, minlength=split.num_classes).tolist(),
        },
        "x_range": [
            float(min(split.x_train.min(), split.x_test.min())),
            float(max(split.x_train.max(), split.x_test.max())),
        ],
        "meta": split.meta,
    }


class SkippedSource(DataError):
    """An optional source whose file was absent when `prepare` ran: `.reason` says which."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"data source {name!r} was skipped by prepare: {reason}")
        self.name, self.reason = name, reason

    def __reduce__(self):  # picklable across processes (args are not the message)
        return type(self), (self.name, self.reason)


def skip_reason(cfg) -> str | None:
    """Why an optional file source is skipped (its file is absent), else None."""
    if not getattr(cfg, "optional", False):
        return None
    paths = [cfg.path, getattr(cfg, "test_path", None)]
    missing = [str(p) for p in paths if p is not None and not Path(p).exists()]
    if not missing:
        return None
    return f"optional {cfg.kind} file {' and '.join(missing)} does not exist"


def _write_manifest(out_dir: Path, name: str, manifest: dict) -> None:
    atomic_write(
        out_dir / f"{name}.json",
        lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n"),
    )


def prepare_source(name: str, cfg, seed: int, out_dir: Path) -> dict:
    npz_path = out_dir / f"{name}.npz"
    reason = skip_reason(cfg)
    if reason:  # the manifest records the skip; no stale arrays may outlive it
        manifest = {"name": name, "skipped": reason}
        _write_manifest(out_dir, name, manifest)
        npz_path.unlink(missing_ok=True)
        return manifest
    split = SOURCES.get(cfg.kind)(cfg, seed)
    arrays = {k: getattr(split, k) for k in ("x_train", "y_train", "x_test", "y_test")}

    def write_npz(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: savez must not append '.npz' to the tmp name
            np.savez_compressed(f, **arrays)

    atomic_write(npz_path, write_npz)
    md5, sha = file_digests(npz_path)
    manifest = manifest_for(name, split, md5, sha)
    _write_manifest(out_dir, name, manifest)
    return manifest


def prepare_all(params, names: list[str] | None = None, log=print) -> dict[str, dict]:
    out_dir = Path(params.data.prepared_dir)
    sources = params.data.sources
    names = names or list(sources)
    unknown = [n for n in names if n not in sources]
    if unknown:
        raise DataError(f"unknown data source(s) {unknown}; configured: {', '.join(sources)}")
    done = {}
    for name in names:
        m = prepare_source(name, sources[name], params.seed, out_dir)
        if "skipped" in m:
            log(f"skipped {name}: {m['skipped']}")
        else:
            log(
                f"prepared {name}: train {m['shapes']['x_train']} test {m['shapes']['x_test']} "
                f"md5 {m['md5']}"
            )
        done[name] = m
    return done


@dataclass(frozen=True)
class Prepared:
    name: str
    path: Path
    manifest: dict
    split: Split

    @property
    def digest(self) -> str:
        return self.manifest["md5"]


def read_manifest(prepared_dir: Path, name: str) -> tuple[Path, dict]:
    """The npz path and manifest of a prepared source; SkippedSource if prepare skipped it."""
    npz_path, man_path = prepared_dir / f"{name}.npz", prepared_dir / f"{name}.json"
    if not man_path.is_file():
        raise DataError(f"prepared dataset {name!r} is missing ({man_path}); {FIX}")
    try:
        manifest = json.loads(man_path.read_text())
    except json.JSONDecodeError:
        raise DataError(f"manifest {man_path} is corrupt; {FIX}") from None
    if isinstance(manifest, dict) and "skipped" in manifest:
        raise SkippedSource(name, manifest["skipped"])
    if not npz_path.is_file():
        raise DataError(f"prepared dataset {name!r} is missing ({npz_path}); {FIX}")
    return npz_path, manifest


def load_prepared(prepared_dir: Path | str, name: str, verify: bool = True) -> Prepared:
    npz_path, manifest = read_manifest(Path(prepared_dir), name)
    if verify and file_digests(npz_path)[0] != manifest.get("md5"):
        raise DataError(
            f"prepared dataset {npz_path} does not match its manifest (corrupt or edited); {FIX}"
        )
    try:
        with np.load(npz_path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"prepared dataset {npz_path} is unreadable ({e}); {FIX}") from None
    problem = _array_problem(arrays, manifest)
    if problem:
        raise DataError(f"prepared dataset {npz_path}: {problem}; {FIX.replace('create', 'redo')}")
    return Prepared(name, npz_path, manifest, Split(**arrays, meta=manifest.get("meta", {})))


def _array_problem(arrays: dict[str, np.ndarray], manifest: dict) -> str:
    """What is wrong with a prepared file's arrays ("" = nothing): shapes other than the
    manifest's, a label count that differs from the examples', non-finite pixels, labels that
    are not class codes 0..K-1. A file that passed its digest check can still be one a buggy
    or hand-edited `prepare` wrote with a matching manifest."""
    shapes = manifest.get("shapes", {})
    for key, a in arrays.items():
        if key in shapes and list(a.shape) != list(shapes[key]):
            return f"{key} has shape {list(a.shape)}, its manifest says {shapes[key]}"
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if y.ndim != 1 or len(x) != len(y):
            return f"{len(x)} {part} examples but labels of shape {list(y.shape)}"
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            return f"x_{part} holds NaN or inf values"
        k = manifest.get("num_classes")
        if y.dtype.kind not in "iu" or (len(y) and (y.min() < 0 or (k and y.max() >= k))):
            return f"y_{part} holds labels outside the class codes 0..{(k or 0) - 1}"
    return ""
