"""reports/plots-<profile>/: the plot data `dvc plots show` draws, from the summary metrics."""

from __future__ import annotations

import csv

from adaptflow import dvc_plots

METRICS = {
    "pretrain/greedy/f0.01/test_acc_mean": 0.6,
    "pretrain/random/f0.01/test_acc_mean": 0.4,
    "pretrain/greedy/f1/test_acc_mean": 0.94,
    "pretrain/random/f1/test_acc_mean": 0.92,
    "pretrain/greedy/f0.01/test_acc_std": 0.05,  # spreads are not plotted
    "finetune/resnet/finetune/f0.1/test_acc_mean": 0.95,
    "finetune/resnet/scratch/f0.1/test_acc_mean": 0.75,
    "finetune/vit/finetune/f0.1/test_acc_mean": 0.9,
    "da/syn2mnist/mcc/target_acc_mean": 0.62,
    "da/mnist2usps/mcc/target_acc_mean": 0.81,
    "ae/pca/test_mse": 0.0159,
    "ae/ae-mlp/test_mse": 0.0154,
    "ae/test_mse": 0.0154,  # the registered model's: not a bar of its own
}


def read(path):
    with open(path) as f:
        return list(csv.reader(f))


def test_one_wide_csv_per_figure(tmp_path):
    written = dvc_plots.write(tmp_path, METRICS)
    assert sorted(p.name for p in written) == [
        "ae.csv",
        "da.csv",
        "finetune-resnet.csv",
        "finetune-vit.csv",
        "pretrain.csv",
    ]
    assert read(tmp_path / "pretrain.csv") == [
        ["fraction", "greedy", "random"],
        ["0.01", "0.6", "0.4"],
        ["1", "0.94", "0.92"],
    ]
    assert read(tmp_path / "finetune-resnet.csv") == [
        ["fraction", "finetune", "scratch"],
        ["0.1", "0.95", "0.75"],
    ]
    assert read(tmp_path / "da.csv") == [
        ["run", "target_acc"],
        ["mnist2usps mcc", "0.81"],
        ["syn2mnist mcc", "0.62"],
    ]
    assert read(tmp_path / "ae.csv") == [
        ["model", "test_mse"],
        ["ae-mlp", "0.0154"],
        ["pca", "0.0159"],
    ]


def test_a_figure_no_longer_produced_is_removed(tmp_path):
    dvc_plots.write(tmp_path, METRICS)
    only_ae = {k: v for k, v in METRICS.items() if k.startswith("ae/")}
    dvc_plots.write(tmp_path, only_ae)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ae.csv"]
