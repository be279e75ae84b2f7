"""Fixtures of the flow tests: a temporary Prefect server per test module."""

from __future__ import annotations

import pytest
from prefect.testing.utilities import prefect_test_harness

# a da stage in seconds: the smoke profile, fewer steps and examples
TINY_DA = [
    "profile=smoke",
    "da.steps=20",
    "da.max_train=300",
    "da.max_target=300",
    "da.max_test=100",
    "da.select_points=100",
    "da.tsne_points=30",
]


@pytest.fixture(scope="module")
def harness():
    with prefect_test_harness(server_startup_timeout=90):
        yield
