"""Figures logged as artifacts (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def tile(images: np.ndarray, cols: int, pad: int = 1) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] as one (rows*(H+pad), cols*(W+pad)[, C]) montage array."""
    n, c, h, w = images.shape
    rows = int(np.ceil(n / cols))
    out = np.ones((rows * (h + pad), cols * (w + pad), c), np.float32)
    for i, img in enumerate(images):
        r, k = divmod(i, cols)
        out[r * (h + pad) : r * (h + pad) + h, k * (w + pad) : k * (w + pad) + w] = img.transpose(
            1, 2, 0
        )
    return out.squeeze(-1) if c == 1 else out


def image_rows(rows: dict[str, np.ndarray], n: int = 10, title: str = ""):
    """One row of n images per entry (e.g. input / pca / ae) for a side-by-side comparison.
    Drawn as a single montage (one axes, not one per image: fast for many rows)."""
    stack = np.concatenate([np.asarray(imgs[:n], np.float32) for imgs in rows.values()])
    h = stack.shape[2] + 1
    fig, ax = plt.subplots(figsize=(n * 0.9 + 1.5, len(rows) * 0.9 + 0.5))
    ax.imshow(tile(stack, n), cmap="gray", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([h * i + h / 2 - 1 for i in range(len(rows))], list(rows), fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def curves(
    series: dict[str, list[float]], xlabel: str = "epoch", ylabel: str = "loss", title: str = ""
):
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for label, ys in series.items():
        ax.plot(range(1, len(ys) + 1), ys, marker="o", ms=3, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def image_grid(images: np.ndarray, cols: int = 8, title: str = ""):
    """A cols-wide grid of images (N, C, H, W) in [0, 1], drawn as one montage."""
    rows = int(np.ceil(len(images) / cols))
    fig, ax = plt.subplots(figsize=(cols * 0.8, rows * 0.8 + 0.4))
    ax.imshow(tile(np.asarray(images, np.float32), cols), cmap="gray", vmin=0, vmax=1)
    ax.axis("off")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def embeddings(points: dict[str, np.ndarray], labels: np.ndarray, title: str = ""):
    """One 2-D scatter per entry, coloured by class."""
    n = len(points)
    fig, axes = plt.subplots(1, n, figsize=(3.0 * n + 1, 3.4), squeeze=False, layout="constrained")
    for ax, (name, xy) in zip(axes[0], points.items(), strict=True):
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=4, vmin=0, vmax=9)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(sc, ax=axes[0].tolist(), shrink=0.8, label="class")
    if title:
        fig.suptitle(title)
    return fig


def curve_panels(panels: dict[str, dict[str, list[float]]], xlabel: str = "epoch"):
    """One subplot per entry (losses on different scales), each with its own series."""
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.0), squeeze=False)
    for ax, (name, series) in zip(axes[0], panels.items(), strict=True):
        for label, ys in series.items():
            ax.plot(range(1, len(ys) + 1), ys, label=label)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def metric_vs_level(panels: dict[str, dict[str, tuple]], ylabel: str):
    """One subplot per entry; each series (levels, means, stds) drawn with ±std error bars
    (e.g. PSNR against the noise level, mean ± std over seeds)."""
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    for ax, (name, series) in zip(axes[0], panels.items(), strict=True):
        for label, (xs, means, stds) in series.items():
            style = {"ls": "--", "color": "gray"} if label == "noisy input" else {}
            ax.errorbar(xs, means, yerr=stds, marker="o", ms=3, capsize=2, label=label, **style)
        ax.set_title(name)
        ax.set_xlabel("noise level")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def sparsity_tradeoff(points: list[dict[str, float]], rho: float, mse_limit: float | None = None):
    """Sparse AE on the VALIDATION split: MSE against mean code activation, one point per lambda
    (annotated with its share of units in [rho/2, 2 rho]); `mse_limit`: the claim's bound
    (factor x the plain AE's validation MSE), drawn as a horizontal line."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    act = [p["val_mean_activation"] for p in points]
    err = [p["val_mse"] for p in points]
    ax.plot(act, err, marker="o")
    for p, a, e in zip(points, act, err, strict=True):
        ax.annotate(
            f"λ={p['lam']:g}\n{p['val_unit_band_fraction']:.0%} in band",
            (a, e),
            fontsize=7,
            textcoords="offset points",
            xytext=(4, 4),
        )
    ax.axvline(rho, color="gray", ls="--", label=f"ρ = {rho:g}")
    if mse_limit is not None:
        ax.axhline(mse_limit, color="tab:red", ls=":", label="MSE bound of the claim")
    ax.margins(0.15)
    ax.set_xlabel("mean code activation (validation)")
    ax.set_ylabel("validation MSE")
    ax.set_title("sparse AE: reconstruction vs sparsity (validation)")
    ax.legend()
    fig.tight_layout()
    return fig


def confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], title: str = ""):
    """Confusion matrix (rows: true class, normalised per row) with counts."""
    from sklearn.metrics import ConfusionMatrixDisplay

    k = len(classes)
    fig, ax = plt.subplots(figsize=(0.45 * k + 2.5, 0.45 * k + 2))
    ConfusionMatrixDisplay.from_predictions(
        y_true,
        y_pred,
        labels=list(range(k)),
        display_labels=classes,
        normalize="true",
        values_format=".2f",
        include_values=k <= 12,
        colorbar=False,
        ax=ax,
    )
    ax.set_title(title)
    fig.tight_layout()
    return fig


def domains(points: dict[str, np.ndarray], domain: np.ndarray, title: str = ""):
    """One 2-D scatter per entry, coloured by domain (0 = source, 1 = target)."""
    n = len(points)
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.6), squeeze=False, layout="constrained")
    for ax, (name, xy) in zip(axes[0], points.items(), strict=True):
        for d, colour, label in ((0, "tab:blue", "source"), (1, "tab:orange", "target")):
            sel = domain == d
            ax.scatter(xy[sel, 0], xy[sel, 1], s=4, c=colour, label=label, alpha=0.6)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(loc="best", markerscale=3)
    if title:
        fig.suptitle(title)
    return fig


def timing_vs_length(rows: list[dict]):
    """Median training-step and forward-pass time per model vs sequence length (log-log)."""
    from adaptflow.methods.seq import median_ms

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    lengths = sorted({r["length"] for r in rows})
    for ax, (key, title) in zip(
        axes, [("step_s", "training step"), ("forward_s", "forward pass")], strict=True
    ):
        for model in sorted({r["model"] for r in rows}):
            ys = [median_ms(rows, n, model, key) for n in lengths]
            ax.plot(lengths, ys, marker="o", label=model)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length")
        ax.set_ylabel("ms per batch")
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
