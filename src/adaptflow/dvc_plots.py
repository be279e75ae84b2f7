"""The plot data DVC versions per profile: `reports/plots-<profile>/*.csv` (`dvc plots show`).

Built from the pipeline's summary metrics (the same numbers as `reports/metrics-<profile>.json`),
one small wide CSV per figure, so `dvc plots diff` draws any two commits or experiments side by
side: label efficiency of pretraining and of transfer, DA target accuracy per method and pair,
the autoencoders' test MSE, the GANs' Fréchet distance, the sequence models' test
accuracy. A figure whose stage did not run is not written.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from adaptflow.files import atomic_write_text

# metric key -> figure; the match names its file (`file`), row (`row`, the x value) and column
PATTERNS = [
    re.compile(r"^(?P<file>pretrain)/(?P<col>[^/]+)/f(?P<row>[\d.]+)/test_acc_mean$"),
    re.compile(
        r"^finetune/(?P<bb>[^/]+)/(?P<col>[^/]+)/f(?P<row>[\d.]+)/test_acc_mean$"
    ),  # one file per backbone: finetune-<backbone>.csv, a column per arm
    re.compile(r"^da/(?P<pair>[^/]+)/(?P<method>[^/]+)/target_acc_mean$"),
    re.compile(r"^(?P<file>ae)/(?P<row>[^/]+)/(?P<col>test_mse)$"),
    re.compile(r"^(?P<file>gan)/(?P<row>[^/]+)/(?P<col>test_frechet)_mean$"),
    re.compile(r"^(?P<file>seq)/(?P<row>[^/]+)/(?P<col>test_acc)_mean$"),
]
X = {"pretrain": "fraction", "finetune": "fraction", "da": "run", "ae": "model"}
X |= {"gan": "generator", "seq": "model"}


def tables(metrics: dict[str, float]) -> dict[str, dict[str, dict[str, float]]]:
    """{file stem: {row: {column: value}}} from the summary metrics."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key, value in metrics.items():
        for pattern in PATTERNS:
            m = pattern.match(key)
            if m is None:
                continue
            g = m.groupdict()
            if "bb" in g:
                stem, row, col = f"finetune-{g['bb']}", g["row"], g["col"]
            elif "pair" in g:  # one bar per pair and method
                stem, row, col = "da", f"{g['pair']} {g['method']}", "target_acc"
            else:
                stem, row, col = g["file"], g["row"], g["col"]
            out.setdefault(stem, {}).setdefault(row, {})[col] = float(value)
            break
    return out


def _x(stem: str) -> str:
    return X[stem.split("-")[0]]


def _sort_key(stem: str, row: str):
    return float(row) if _x(stem) == "fraction" else row


def write(directory: Path, metrics: dict[str, float]) -> list[Path]:
    """One CSV per figure in `directory`, each replaced whole; figures no longer produced are
    removed so the directory matches this run."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for figure, rows in tables(metrics).items():
        columns = sorted({c for r in rows.values() for c in r})
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([_x(figure), *columns])
        for row in sorted(rows, key=lambda r: _sort_key(figure, r)):
            w.writerow([row, *(_cell(rows[row].get(c)) for c in columns)])
        written.append(atomic_write_text(directory / f"{figure}.csv", buf.getvalue()))
    for stale in set(directory.glob("*.csv")) - set(written):
        stale.unlink()
    return written


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"
