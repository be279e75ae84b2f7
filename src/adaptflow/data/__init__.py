"""Data sources (embedded and file), domain pairs and the DVC `prepare` stage."""

from adaptflow.data import embedded, files  # noqa: F401  (register the sources)
from adaptflow.data.base import SOURCES, DataError, Split
from adaptflow.data.prepare import Prepared, SkippedSource, load_prepared, prepare_all

__all__ = [
    "SOURCES",
    "DataError",
    "Prepared",
    "SkippedSource",
    "Split",
    "load_prepared",
    "prepare_all",
]
