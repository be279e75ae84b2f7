"""Using the registry: predictions from a registered model, and what the registry holds.

`predict` loads a model through `models:/<name>@<alias>` (or `/<version>`), checks the input
against the model's logged signature, and writes one CSV row per input: for a classifier the
predicted class and every class probability (softmax of its scores), for an autoencoder (the
output has the input's shape) the reconstruction MSE per row — the `ae` stage's anomaly score.
The CSV is written to a temporary file and renamed, so a failed run leaves no half-written file.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adaptflow.files import atomic_write

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class ServingError(RuntimeError):
    """The model or the input cannot be used as asked; the message names the fix."""


def model_uri(model: str) -> str:
    """`adaptflow-da@champion-mnist2usps` -> `models:/adaptflow-da@champion-mnist2usps`; a
    `models:/`, `runs:/` or other URI is kept as it is."""
    return model if ":/" in model else f"models:/{model}"


def input_shape(uri: str) -> tuple[int, ...]:
    """The per-row input shape of the logged model's signature (without the batch axis)."""
    from mlflow.exceptions import MlflowException
    from mlflow.models import get_model_info

    try:
        info = get_model_info(uri)
    except (MlflowException, OSError) as e:
        raise ServingError(
            f"cannot resolve {uri} ({e}); list what is registered with `adaptflow models`"
        ) from None
    sig = info.signature
    if sig is None or sig.inputs is None:
        raise ServingError(f"{uri} has no input signature: re-log it with an input example")
    spec = sig.inputs.inputs[0]
    shape = getattr(spec, "shape", None)
    if not shape or len(shape) < 2:
        raise ServingError(f"{uri}: its signature is not a tensor batch ({spec})")
    return tuple(int(d) for d in shape[1:])


def read_input(path: Path, shape: tuple[int, ...], x_key: str | None = None):
    """(rows, names): an npz / npy array or a folder of images, as float32 rows of `shape`.

    For an image model (signature (C, H, W)) pixels in [0, 1] are taken as they are and pixels
    in [0, 255] are divided by 255, as the pipeline prepares images; any other range is refused.
    Any other model (feature vectors, sequences) gets the values unchanged: its own
    preprocessing (e.g. the da stage's z-scoring) is inside the served network. Images from a
    folder are read in the model's channel count and resized to its height x width. See `_fit`
    for the row layouts accepted."""
    path = Path(path)
    if not path.exists():
        raise ServingError(f"{path}: no such file or folder")
    if path.is_dir():
        return _read_images(path, shape)
    if path.suffix not in (".npz", ".npy"):
        raise ServingError(f"{path}: expected an .npz/.npy array or a folder of images")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ServingError(f"{path}: unreadable array file ({e})") from None
    if isinstance(loaded, np.ndarray):
        x = loaded
    else:
        keys = list(loaded.keys())
        key = x_key or ("x" if "x" in keys else keys[0] if len(keys) == 1 else None)
        if key not in keys:
            raise ServingError(
                f"{path}: which array holds the inputs? keys {keys}; pass --x-key"
                if key is None
                else f"{path}: no key {key!r} (keys {keys}); pass --x-key"
            )
        x = loaded[key]
    if not np.issubdtype(x.dtype, np.number):
        raise ServingError(f"{path}: inputs of dtype {x.dtype} are not numbers")
    x = np.asarray(x, np.float32)
    if x.ndim == 1:
        x = x[None]
    if len(x) == 0:
        raise ServingError(f"{path}: no rows to predict")
    x = _fit(x, shape, str(path))
    if not np.isfinite(x).all():
        raise ServingError(f"{path}: inputs hold NaN or infinite values")
    if len(shape) == 3:
        x = _unit_pixels(x, str(path))
    return x, [str(i) for i in range(len(x))]


def _unit_pixels(x: np.ndarray, where: str) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    if lo >= 0 and hi <= 1:
        return x
    if lo >= 0 and hi <= 255:
        return x / 255.0
    raise ServingError(
        f"{where}: pixel values run {lo:g}..{hi:g}; an image model takes [0, 1] or [0, 255] "
        "pixels: rescale the inputs like the model's training images"
    )


def _squeezed(shape) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _fit(x: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    """x reshaped to rows of `shape` when they hold the same values in the same order: rows
    that differ only by axes of size 1 ((H, W) for (1, H, W), (1, D) for (D,)), and flat rows
    of H*W values for a one-channel image model. Anything else (other sizes, channel-last or
    flattened colour images) is an error naming both shapes."""
    row = x.shape[1:]
    if row == shape:
        return x
    flat_gray = len(shape) == 3 and shape[0] == 1 and row == (math.prod(shape),)
    if _squeezed(row) == _squeezed(shape) or flat_gray:
        return x.reshape(len(x), *shape)
    raise ServingError(
        f"{where}: rows of shape {row} do not fit the model's input {shape} (its signature); "
        "give inputs prepared like the model's training data (same size and channels)"
    )


def _read_images(folder: Path, shape: tuple[int, ...]):
    import torch
    from PIL import Image, UnidentifiedImageError

    from adaptflow.data.files import image_transform

    if len(shape) != 3:
        raise ServingError(
            f"{folder}: the model takes rows of shape {shape}, not images; give an .npz array"
        )
    channels, h, w = shape
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ServingError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in it")
    if channels not in (1, 3):
        raise ServingError(f"{folder}: the model takes {channels}-channel images; give an .npz")
    tf = image_transform(channels, h, w)  # as `prepare` reads an image folder
    rows = []
    for f in files:
        try:
            with Image.open(f) as im:
                rows.append(tf(im.convert("RGB")))
        except (OSError, UnidentifiedImageError) as e:
            raise ServingError(f"{f}: unreadable image ({e}); delete or re-save it") from None
    return torch.stack(rows).numpy(), [str(f.relative_to(folder)) for f in files]


@dataclass(frozen=True)
class Prediction:
    kind: str  # "classes" | "reconstruction"
    columns: list[str]
    rows: list[list]


def predict(model, x: np.ndarray, names: list[str], batch_size: int = 256) -> Prediction:
    """Run `model` (a torch module in eval mode) on x, batch by batch, on the CPU."""
    import torch

    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            outs.append(model(torch.from_numpy(x[i : i + batch_size])).float().numpy())
    y = np.concatenate(outs)
    if y.shape == x.shape:  # an autoencoder: the reconstruction error is the useful output
        mse = ((y - x) ** 2).reshape(len(x), -1).mean(1)
        return Prediction(
            "reconstruction",
            ["input", "reconstruction_mse"],
            [[n, float(v)] for n, v in zip(names, mse, strict=True)],
        )
    if y.ndim != 2:
        raise ServingError(
            f"the model outputs {y.shape[1:]} per row: neither class scores nor a reconstruction"
        )
    p = torch.softmax(torch.from_numpy(y), dim=1).numpy()
    cols = ["input", "prediction", "probability"] + [f"p_{k}" for k in range(p.shape[1])]
    rows = [
        [n, int(row.argmax()), float(row.max()), *map(float, row)]
        for n, row in zip(names, p, strict=True)
    ]
    return Prediction("classes", cols, rows)


def write_csv(pred: Prediction, out: Path) -> None:
    """Write atomically: a temporary file beside `out`, renamed once complete."""
    out = Path(out)
    if out.is_dir():
        raise ServingError(f"--out {out} is a folder; give a file name, e.g. {out / 'preds.csv'}")

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(pred.columns)
            w.writerows([[f"{v:.6g}" if isinstance(v, float) else v for v in r] for r in pred.rows])

    atomic_write(out, write)


def registry_rows(client=None) -> list[dict]:
    """One dict per registered version: name, version, aliases, gate decision and reason,
    the run it came from, and its method/label tags."""
    from mlflow.tracking import MlflowClient

    client = client or MlflowClient()
    aliases: dict[tuple[str, str], list[str]] = {}
    for rm in _all(client.search_registered_models):
        for alias, version in (rm.aliases or {}).items():
            aliases.setdefault((rm.name, str(version)), []).append(alias)
    rows = []
    # one unfiltered, paged search: a filter would have to quote names (a ' is a legal name)
    versions = _all(client.search_model_versions)
    for v in sorted(versions, key=lambda v: (v.name, int(v.version))):
        tags = v.tags or {}
        rows.append(
            {
                "name": v.name,
                "version": str(v.version),
                "aliases": ", ".join(sorted(aliases.get((v.name, str(v.version)), []))),
                "decision": tags.get("gate.decision", ""),
                "reason": tags.get("gate.reason", ""),
                "run_id": v.run_id or "",
                "tags": ", ".join(
                    f"{k}={val}" for k, val in sorted(tags.items()) if not k.startswith("gate.")
                ),
            }
        )
    return rows


def _all(search) -> list:
    """Every page of an MLflow client search."""
    out, token = [], None
    while True:
        page = search(max_results=1000, page_token=token)
        out += list(page)
        token = page.token
        if not token:
            return out
