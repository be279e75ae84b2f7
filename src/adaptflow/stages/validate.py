"""Params checked against the prepared data, before any run is created.

What params alone decide is checked in `adaptflow.config`; what needs the data (its shape, its
classes, its size) is checked here, from the small JSON manifests `prepare` writes beside each
dataset (no array is loaded). A failure raises `ParamsError` naming the key, the bad value and
the fix; the CLI exits 2 and no MLflow run exists. A missing manifest is a `DataError`
("run make data"), as when a stage loads its data.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from adaptflow.config import Params, ParamsError
from adaptflow.data.prepare import read_manifest


def _error(line: str) -> ParamsError:
    return ParamsError(f"invalid params:\n  {line}")


def _manifest(params: Params, dataset: str) -> dict:
    return read_manifest(params.data.prepared_dir, dataset)[1]


def _image_shape(stage: str, dataset: str, manifest: dict) -> tuple[int, int, int]:
    shape = manifest["shapes"]["x_train"]
    if len(shape) != 4:
        raise _error(
            f"{stage}.dataset = {dataset!r}: its examples have shape {tuple(shape[1:])} "
            f"(sequences), {stage} needs images (C, H, W); pick an image source"
        )
    return tuple(shape[1:])


def _training_examples(n_train: int, val_fraction: float, max_train: int | None) -> int:
    """How many examples a stage trains on: the split of `stages.base.split_train_val`."""
    from adaptflow.stages.base import split_train_val

    return len(split_train_val(n_train, val_fraction, max_train, seed=0)[0])


def _check_ae(params: Params) -> None:
    cfg = params.ae
    manifest = _manifest(params, cfg.dataset)
    c, h, w = _image_shape("ae", cfg.dataset, manifest)
    n_classes = manifest["num_classes"]
    if cfg.anomaly_digit is not None and cfg.anomaly_digit >= n_classes:
        raise _error(
            f"ae.anomaly_digit = {cfg.anomaly_digit}: {cfg.dataset!r} has {n_classes} classes "
            f"(0..{n_classes - 1}); pick one of them, or null to skip the anomaly test"
        )
    if "pca" in cfg.methods:
        features = c * h * w
        n = _training_examples(manifest["shapes"]["x_train"][0], cfg.val_fraction, cfg.max_train)
        if cfg.code_size > min(features, n):
            raise _error(
                f"ae.code_size = {cfg.code_size}: PCA (in ae.methods) has at most "
                f"min(features C*H*W = {features}, training examples = {n}) components; "
                f"lower ae.code_size to <= {min(features, n)}, raise ae.max_train, or drop pca"
            )
    blocks = len(cfg.conv_channels)
    if "conv" in cfg.archs and (h % 2**blocks or w % 2**blocks):
        raise _error(
            f"ae.conv_channels = {list(cfg.conv_channels)}: {blocks} stride-2 blocks need the "
            f"image side of {cfg.dataset!r} ({h}x{w}) divisible by {2**blocks}; "
            "use fewer conv_channels or ae.archs without conv"
        )


def _check_pretrain(params: Params) -> None:
    cfg = params.pretrain
    manifest = _manifest(params, cfg.dataset)
    _image_shape("pretrain", cfg.dataset, manifest)
    _check_pretrain_budget(params, manifest)


def _check_pretrain_budget(params: Params, manifest: dict) -> None:
    """Every label fraction affords one label per class, and the f = 1 model has gate labels.

    N = pool + monitor of `stages.budget.data_plan` (the stage keeps its own raise as a net).
    """
    from adaptflow.stages.budget import data_plan

    cfg = params.pretrain
    n_train = manifest["shapes"]["x_train"][0]
    plan = data_plan(n_train, cfg.val_fraction, cfg.max_train, params.seed)
    n, n_classes = plan.n_total, manifest["num_classes"]
    f = min(cfg.label_fractions)
    if plan.allowed(f) < n_classes:
        need = math.ceil(n_classes / n * 1e4) / 1e4
        raise _error(
            f"pretrain.label_fractions: {f:g} x N = {n} images = {plan.allowed(f)} "
            f"labels, fewer than the {n_classes} classes of {cfg.dataset!r}; raise the smallest "
            f"fraction to >= {need:g} (or pretrain.max_train)"
        )
    if max(cfg.label_fractions) < 1.0:
        raise _error(
            f"pretrain.label_fractions = {list(cfg.label_fractions)}: no gate labels; the "
            "registry gate measures the f=1 model on the monitor split, inside its budget only "
            "at f = 1; append 1.0"
        )


def _check_source(params: Params) -> None:
    """The source images fit every backbone, and `source.pretrained` weights can be had: timm's
    hub weights (online, or already cached) or a checkpoint of the right architecture. Checked
    before any run: offline, `hub` fails here at once with the fix."""
    from adaptflow.models.backbones import CheckpointFileError, HubUnavailableError
    from adaptflow.stages.source import build

    c, _, _ = _source_shape(params)
    cfg = params.source
    if cfg.pretrained == "source":
        return
    n_classes = _manifest(params, cfg.dataset)["num_classes"]
    for label, bb in params.transfer.backbones.items():
        try:
            build(bb, n_classes, c, cfg.pretrained)  # what the stage will do, before any run
        except (HubUnavailableError, CheckpointFileError, ValueError) as e:
            raise _error(
                f"source.pretrained = {cfg.pretrained!r} (backbone {label!r}): {e}"
            ) from None


def _source_shape(params: Params) -> tuple[int, int, int]:
    """The source task is images, and every backbone's fixed input size matches them."""
    c, h, w = _image_shape(
        "source", params.source.dataset, _manifest(params, params.source.dataset)
    )
    for label, bb in params.transfer.backbones.items():
        size = bb.kwargs.get("img_size")
        if size is not None and tuple(size if isinstance(size, list) else (size, size)) != (h, w):
            raise _error(
                f"transfer.backbones.{label}.kwargs.img_size = {size}: the source images "
                f"({params.source.dataset!r}) are {h}x{w}; set img_size: {h}"
            )
    return c, h, w


def _check_same_input(params: Params, key: str, dataset: str) -> dict:
    """A dataset the source backbones embed must have the source's channels and size."""
    manifest = _manifest(params, dataset)
    shape = _image_shape(key.split(".")[0], dataset, manifest)
    src = _source_shape(params)
    if shape != src:
        raise _error(
            f"{key} = {dataset!r}: its images are {'x'.join(map(str, shape))} (C x H x W) but the "
            f"backbones were trained on {params.source.dataset!r} at {'x'.join(map(str, src))}; "
            "use a source and targets of the same channels and size"
        )
    return manifest


def _check_features(params: Params) -> None:
    for i, dataset in enumerate(params.features.datasets):
        _check_same_input(params, f"features.datasets[{i}]", dataset)


def _check_finetune(params: Params) -> None:
    """The target matches the source input, and the smallest label budget has a label per class."""
    from adaptflow.models.backbones import block_names
    from adaptflow.stages.budget import data_plan
    from adaptflow.stages.source import new_backbone

    sweep = params.transfer
    manifest = _check_same_input(params, "transfer.target", sweep.target)
    unfreeze = params.finetune.unfreeze
    for label, bb in sweep.backbones.items() if unfreeze != "all" else ():
        blocks = block_names(new_backbone(bb, 2, manifest["shapes"]["x_train"][1]))
        if unfreeze > len(blocks):
            raise _error(
                f"finetune.unfreeze = {unfreeze}: backbone {label!r} ({bb.arch}) has "
                f"{len(blocks)} blocks ({', '.join(blocks)}); use 1..{len(blocks)} or all"
            )
    plan = data_plan(manifest["shapes"]["x_train"][0], sweep.val_fraction, sweep.max_train, 0)
    n_classes, f = manifest["num_classes"], min(sweep.label_fractions)
    if plan.allowed(f) < n_classes:
        need = math.ceil(n_classes / plan.n_total * 1e4) / 1e4
        raise _error(
            f"transfer.label_fractions: {f:g} x N = {plan.n_total} images = {plan.allowed(f)} "
            f"labels, fewer than the {n_classes} classes of {sweep.target!r}; raise the smallest "
            f"fraction to >= {need:g} (or transfer.max_train)"
        )


def _check_gan(params: Params) -> None:
    """DCGAN's fixed 1x28x28 geometry, and a label budget that affords every class."""
    import math

    from adaptflow.stages.gan import SHAPE

    cfg = params.gan
    manifest = _manifest(params, cfg.dataset)
    shape = _image_shape("gan", cfg.dataset, manifest)
    if shape != SHAPE:
        raise _error(
            f"gan.dataset = {cfg.dataset!r}: its images are {'x'.join(map(str, shape))} "
            f"(C x H x W); the DCGAN generates {'x'.join(map(str, SHAPE))}: pick an MNIST-like "
            "source (e.g. mnist, or digits with size: 28)"
        )
    n_train = manifest["shapes"]["x_train"][0]
    n = (
        min(n_train, cfg.max_train + round(cfg.max_train * cfg.val_fraction))
        if cfg.max_train
        else n_train
    )
    allowed = math.floor(cfg.augment.fraction * n + 1e-9)
    classes = manifest["num_classes"]
    if allowed < classes:
        raise _error(
            f"gan.augment.fraction = {cfg.augment.fraction:g}: {cfg.augment.fraction:g} x {n} "
            f"training images = {allowed} labels, fewer than the {classes} classes; raise the "
            "fraction (at most 0.01) or train on more images (gan.max_train)"
        )


def _check_da(params: Params) -> None:
    """Each pair's two domains share one task: the same classes (label values), as the stage
    would find only after loading both datasets. A source `prepare` skipped (the shared files
    absent) is the stage's to skip with its reason, not an error here."""
    from adaptflow.data import DataError
    from adaptflow.data.pairs import check_same_classes, label_values_of
    from adaptflow.data.prepare import SkippedSource

    for label, pc in params.da.pairs.items():
        try:
            source, target = (
                label_values_of(m.get("meta", {}), m["num_classes"])
                for m in (_manifest(params, n) for n in (pc.source, pc.target))
            )
        except SkippedSource:
            continue
        try:
            check_same_classes(source, target)
        except DataError as e:
            raise _error(f"da.pairs.{label} ({pc.source} -> {pc.target}): {e}") from None


def _check_seq(params: Params) -> None:
    """Sequences for the sequence models, images of the backbones' size for ViT vs CNN."""
    cfg = params.seq
    shape = _manifest(params, cfg.dataset)["shapes"]["x_train"]
    if len(shape) != 3:
        raise _error(
            f"seq.dataset = {cfg.dataset!r}: its examples have shape {tuple(shape[1:])}; seq "
            "needs sequences (C, L), e.g. the mnist1d source"
        )
    if cfg.image_dataset is None:
        return
    _, h, w = _image_shape("seq", cfg.image_dataset, _manifest(params, cfg.image_dataset))
    for label, bb in cfg.image_models.items():
        size = bb.kwargs.get("img_size")
        if size is not None and tuple(size if isinstance(size, list) else (size, size)) != (h, w):
            raise _error(
                f"seq.image_models.{label}.kwargs.img_size = {size}: the images of "
                f"{cfg.image_dataset!r} are {h}x{w}; set img_size: {h}"
            )


CHECKS: dict[str, Callable[[Params], None]] = {
    "ae": _check_ae,
    "pretrain": _check_pretrain,
    "source": _check_source,
    "features": _check_features,
    "finetune": _check_finetune,
    "da": _check_da,
    "gan": _check_gan,
    "seq": _check_seq,
}


def _check_runner(params: Params) -> None:
    """An existing Dask cluster's workers cannot write this checkout's sqlite store (their
    artifact links would point under their own folders): they need a tracking server."""
    from adaptflow.tracking.store import user_uri

    if params.runner.address is not None and user_uri() is None:
        raise _error(
            f"runner.address = {params.runner.address!r}: the workers of an existing Dask "
            "cluster log to MLflow themselves, so they need a tracking server they can reach; "
            "set MLFLOW_TRACKING_URI (e.g. `make tracking-server`), or drop runner.address "
            "for a local cluster"
        )
    if params.runner.address is not None:
        from adaptflow.sweep import check_cluster

        check_cluster(params.runner.address)  # answers, one thread per worker


def check_against_data(params: Params, stages: list[str]) -> None:
    """Raise ParamsError for the first param of `stages` the prepared data (or the machine:
    `device: cuda` without a GPU) cannot satisfy."""
    from adaptflow.training.device import resolve_device

    resolve_device(params.device)  # at once, before any run; not after the first stage's data
    _check_runner(params)
    for stage in stages:
        check = CHECKS.get(stage)
        if check is not None:
            check(params)
