"""The `adaptflow` command line: bad params exit 2 before any MLflow run exists."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch


def adaptflow(*args: str, cwd) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "adaptflow.cli", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=180)


def said(proc: subprocess.CompletedProcess) -> str:
    return " ".join(proc.stderr.split())  # rich wraps long lines at the console width


def test_cli_exits_2_and_creates_no_run(project):
    """`adaptflow run --set ae.epochs=-1` names the key, exits 2, and writes no MLflow store."""
    proc = adaptflow("run", "--set", "ae.epochs=-1", cwd=project)
    assert proc.returncode == 2, proc.stderr
    assert "ae.epochs" in proc.stderr and "-1" in proc.stderr
    assert not (project / "mlruns").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "ae.anomaly_digit=10"], "ae.anomaly_digit = 10: 'mnist' has 10 classes"),
        (["--set", "ae.code_size=1000"], "ae.code_size = 1000: PCA (in ae.methods)"),
        (
            ["--set", "ae.archs=[mlp, conv]", "--set", "ae.conv_channels=[8, 16, 32]"],
            "need the image side of 'mnist' (28x28) divisible by 8",
        ),
        (["--set", "ae.dataset=mnist1d"], "ae.dataset = 'mnist1d': a sequence source"),
        (
            ["--stage", "pretrain", "--set", "pretrain.dataset=mnist1d"],
            "pretrain.dataset = 'mnist1d': a sequence source",
        ),
        pytest.param(  # at once: before the first stage loads its data or trains
            ["--set", "device=cuda"],
            "device: 'cuda' asked for but no CUDA GPU is visible",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present"),
        ),
    ],
)
def test_params_the_data_cannot_satisfy_exit_2_before_any_run(
    project, prepared_mnist, args, expected
):
    proc = adaptflow("run", "--set", f"data.prepared_dir={prepared_mnist}", *args, cwd=project)
    assert proc.returncode == 2, proc.stderr
    assert expected in said(proc)
    assert not (project / "mlruns").exists() and not (project / ".prefect").exists()


def test_missing_prepared_data_exits_1_and_says_make_data(project):
    proc = adaptflow("run", "--set", "data.prepared_dir=nowhere", cwd=project)
    assert proc.returncode == 1, proc.stderr
    assert "make data" in said(proc)
    assert not (project / "mlruns").exists()


def test_cli_params_shows_merged_values(project):
    proc = adaptflow("params", "--set", "profile=smoke", cwd=project)
    assert proc.returncode == 0, proc.stderr
    assert '"profile": "smoke"' in proc.stdout
