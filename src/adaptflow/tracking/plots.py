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
