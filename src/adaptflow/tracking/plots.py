"""Figures logged as artifacts (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def image_rows(rows: dict[str, np.ndarray], n: int = 10, title: str = ""):
    """One row of n images per entry (e.g. input / pca / ae) for a side-by-side comparison."""
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 0.9, len(rows) * 1.0 + 0.4), squeeze=False)
    for r, (label, imgs) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(imgs[c].transpose(1, 2, 0).squeeze(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title)
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
    """A cols-wide grid of images (N, C, H, W) in [0, 1]."""
    rows = int(np.ceil(len(images) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.8, rows * 0.8 + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i].transpose(1, 2, 0).squeeze(), cmap="gray", vmin=0, vmax=1)
    if title:
        fig.suptitle(title)
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
