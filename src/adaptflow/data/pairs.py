"""Domain pairs: a labelled source and a target in one input format and one class coding.

Images are brought to a common side and channel count; feature vectors must have the same
dimension and may be z-scored. Classes are matched by their original label values
(meta["label_values"], else 0..K-1), never by position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from adaptflow.data.base import DataError, Split, resize

STD_FLOOR = 1e-8  # below this a feature counts as constant and is only centred (scale 1), as
# sklearn's StandardScaler does: dividing by ~0 would blow the other domain's values up to ~1e8
Standardize = Literal["none", "source", "per_domain"]


def _to_format(x: np.ndarray, side: int, channels: int) -> np.ndarray:
    if x.ndim != 4:
        raise DataError(f"domain pairs need images (N, C, H, W), got {x.shape}")
    x = resize(x, side)
    if x.shape[1] == channels:
        return x
    if channels == 3 and x.shape[1] == 1:
        return np.repeat(x, 3, axis=1)
    if channels == 1 and x.shape[1] == 3:  # ITU-R 601 luma, as PIL's convert('L')
        w = np.array([0.299, 0.587, 0.114], np.float32).reshape(1, 3, 1, 1)
        return (x * w).sum(1, keepdims=True)
    raise DataError(f"cannot map {x.shape[1]} channels to {channels}")


def conform(split: Split, side: int, channels: int) -> Split:
    return Split(
        _to_format(split.x_train, side, channels),
        split.y_train,
        _to_format(split.x_test, side, channels),
        split.y_test,
        split.meta,
    )


def label_values(split: Split) -> list:
    """The original label of each code: meta["label_values"], else code k stands for k."""
    return label_values_of(split.meta, split.num_classes)


def label_values_of(meta: dict, num_classes: int) -> list:
    """label_values from a dataset's meta (a Split's, or a manifest's before any loading)."""
    values = meta.get("label_values")
    return list(range(num_classes)) if values is None else list(values)


def _shift(values_s: list, values_t: list) -> int | None:
    """d when the target's values are the source's + d (e.g. MATLAB 1..K against 0..K-1)."""
    if len(values_s) != len(values_t) or not all(isinstance(v, int) for v in values_s + values_t):
        return None
    d = min(values_t) - min(values_s)
    return d if d and sorted(v + d for v in values_s) == sorted(values_t) else None


def check_same_classes(values_s: list, values_t: list) -> None:
    if set(values_s) == set(values_t):
        return
    only_s = [v for v in values_s if v not in set(values_t)]
    only_t = [v for v in values_t if v not in set(values_s)]
    msg = (
        f"source and target have different classes: source {values_s}, target {values_t} "
        f"(only in source: {only_s}; only in target: {only_t})"
    )
    d = _shift(values_s, values_t)
    if d is not None:
        msg += (
            f"; the target's labels are the source's {d:+d}: set label_offset: {d} on the "
            f"source's data source (or {-d} on the target's)"
        )
    else:
        msg += "; a pair needs one task: relabel a domain or pick sources with the same classes"
    raise DataError(msg)


def _recode(split: Split, classes: list) -> Split:
    """Codes follow `classes`: equal label values get equal codes in both domains."""
    values = label_values(split)
    if values == classes:
        return split
    index = {v: k for k, v in enumerate(classes)}
    lookup = np.array([index[v] for v in values], np.int64)
    meta = {**split.meta, "label_values": list(classes)}
    return Split(split.x_train, lookup[split.y_train], split.x_test, lookup[split.y_test], meta)


def _fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-feature mean and population std (as sklearn's StandardScaler) of one training split."""
    x = x.astype(np.float64)
    mean, std = x.mean(0), x.std(0)
    constant = std < STD_FLOOR
    return mean, np.where(constant, 1.0, std), int(constant.sum())


def _apply(split: Split, mean: np.ndarray, std: np.ndarray) -> Split:
    def z(x: np.ndarray) -> np.ndarray:
        return ((x - mean) / std).astype(np.float32)

    return Split(z(split.x_train), split.y_train, z(split.x_test), split.y_test, split.meta)


def zscore(source: Split, target: Split, how: Standardize) -> tuple[Split, Split, dict]:
    """z-score feature vectors; statistics come from training x only (never labels). info
    carries, besides what is logged, `target_stats`: the (mean, std) applied to the target (what
    a model serving target inputs must apply first)."""
    if how == "none":
        return source, target, {"standardize": "none"}
    if how == "source":
        mean, std, constant = _fit(source.x_train)
        info = {"fit_on": "source train", "n_fit": len(source.x_train), "constant": constant}
        info["target_stats"] = (mean, std)
        return _apply(source, mean, std), _apply(target, mean, std), {"standardize": how, **info}
    if how == "per_domain":
        (m_s, s_s, c_s), (m_t, s_t, c_t) = _fit(source.x_train), _fit(target.x_train)
        info = {
            "fit_on": "each domain's train split",
            "n_fit_source": len(source.x_train),
            "n_fit_target": len(target.x_train),
            "constant_source": c_s,
            "constant_target": c_t,
            "target_stats": (m_t, s_t),
        }
        return _apply(source, m_s, s_s), _apply(target, m_t, s_t), {"standardize": how, **info}
    raise DataError(f"standardize={how!r}: use none, source or per_domain")


def _layouts(source: Split, target: Split) -> str:
    describe = {"image": "images (N, C, H, W)", "vector": "feature vectors (N, D)"}
    for role, split in (("source", source), ("target", target)):
        if split.layout not in describe:
            raise DataError(
                f"the {role} is {split.layout}s of shape {split.x_train.shape}; domain pairs "
                "need images or feature vectors"
            )
    if source.layout != target.layout:
        raise DataError(
            f"the source is {describe[source.layout]} {source.x_train.shape[1:]} but the target "
            f"is {describe[target.layout]} {target.x_train.shape[1:]}; set the same `layout` on "
            "both data sources (npz / mat: image or vector)"
        )
    return source.layout


@dataclass(frozen=True)
class DomainPair:
    """source (labelled) -> target (labels used only for evaluation) in a common format.

    side / channels: the common image format (None for vectors); classes: the label value of
    each code, shared by both domains; preprocessing: what `standardize` applied (for logging).
    """

    source: Split
    target: Split
    side: int | None = None
    channels: int | None = None
    classes: tuple = ()
    preprocessing: dict = field(default_factory=lambda: {"standardize": "none"})
    # the (mean, std) z-scoring applied to target inputs (None: none): a served model needs it
    target_stats: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def build(
        cls,
        source: Split,
        target: Split,
        side: int | None = None,
        channels: int | None = None,
        standardize: Standardize = "none",
    ) -> DomainPair:
        layout = _layouts(source, target)
        values_s, values_t = label_values(source), label_values(target)
        check_same_classes(values_s, values_t)
        source, target = _recode(source, values_s), _recode(target, values_s)
        if layout == "image":
            if standardize != "none":
                raise DataError(
                    f"standardize={standardize!r} is for feature vectors; these domains are "
                    "images (set standardize: none, or layout: vector on both sources)"
                )
            side = side or max(source.x_train.shape[-1], target.x_train.shape[-1])
            channels = channels or max(source.x_train.shape[1], target.x_train.shape[1])
            source, target = conform(source, side, channels), conform(target, side, channels)
            info = {"standardize": "none"}
        else:
            d_s, d_t = source.x_train.shape[1], target.x_train.shape[1]
            if d_s != d_t:
                raise DataError(
                    f"the source has {d_s} features per example, the target {d_t}: one feature "
                    "space is needed (extract both with the same features, or set n_features "
                    "for svmlight files)"
                )
            side = channels = None  # an image format means nothing for vectors
            source, target, info = zscore(source, target, standardize)
        stats = info.pop("target_stats", None)
        return cls(source, target, side, channels, tuple(values_s), info, stats)

    @property
    def layout(self) -> str:
        return self.source.layout

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) for images, (D,) for feature vectors."""
        return tuple(self.source.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)
