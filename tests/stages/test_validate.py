"""Params the prepared data cannot satisfy are rejected from the manifests, before any run."""

from __future__ import annotations

import pytest
import yaml

from adaptflow.config import ParamsError, build_params, parse_overrides
from adaptflow.data import DataError, prepare_all
from adaptflow.stages.validate import check_against_data

from ..conftest import REPO

STAGES = ["ae", "pretrain"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """mnist (4,000 train images, 28x28, 10 classes) and a small mnist1d, prepared once."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    out = tmp_path_factory.mktemp("prepared")
    params = build_params(raw, {"data.prepared_dir": str(out), **SMALL})
    prepare_all(params, ["mnist", "mnist1d", "digits", "synchars"], log=lambda m: None)
    return out


SMALL = {
    "data.sources.mnist1d.num_samples": 200,
    "data.sources.synchars.n_train": 360,
    "data.sources.synchars.n_test": 36,
}
TRANSFER = ["source", "features", "finetune"]


def params(raw_params, prepared, *overrides):
    small = [f"{k}={v}" for k, v in SMALL.items()]
    return build_params(
        raw_params, parse_overrides([f"data.prepared_dir={prepared}", *small, *overrides])
    )


def rejected(p, stages=STAGES) -> str:
    with pytest.raises(ParamsError) as err:
        check_against_data(p, stages)
    return str(err.value)


@pytest.mark.parametrize("profile", ["default", "smoke", "bench"])
def test_repo_params_pass(raw_params, prepared, profile):
    check_against_data(params(raw_params, prepared, f"profile={profile}"), STAGES + TRANSFER)


def test_hub_weights_offline_stop_before_any_run(raw_params, prepared, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached
    p = params(raw_params, prepared, "source.pretrained=hub", "transfer.backbones.resnet.kwargs={}")
    msg = rejected(p, TRANSFER)
    assert "source.pretrained = 'hub' (backbone 'resnet')" in msg and "need internet" in msg
    assert "source.pretrained: source" in msg  # the fix


def test_a_bad_checkpoint_names_the_file_before_any_run(raw_params, prepared, tmp_path):
    import torch

    from adaptflow.models.backbones import build_backbone

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    msg = rejected(params(raw_params, prepared, f"source.pretrained={garbage}"), ["source"])
    assert str(garbage) in msg and "not a readable torch checkpoint" in msg
    vit = tmp_path / "vit.pt"  # the right file format, the wrong architecture for `resnet`
    torch.save(
        build_backbone("vit_tiny_patch16_224", 36, kwargs={"img_size": 28}).state_dict(), vit
    )
    msg = rejected(params(raw_params, prepared, f"source.pretrained={vit}"), ["source"])
    assert str(vit) in msg and "(backbone 'resnet')" in msg


def test_transfer_inputs_must_fit_the_backbones(raw_params, prepared):
    msg = rejected(
        params(raw_params, prepared, "profile=bench", "transfer.backbones.vit.kwargs.img_size=32"),
        ["source"],
    )
    assert "transfer.backbones.vit.kwargs.img_size = 32" in msg and "set img_size: 28" in msg
    msg = rejected(
        params(raw_params, prepared, "transfer.label_fractions=[0.001, 1.0]"), ["finetune"]
    )
    assert "0.001 x N = 4000 images = 4 labels" in msg and "fewer than the 10 classes" in msg


def test_anomaly_digit_must_be_a_class_of_the_dataset(raw_params, prepared):
    check_against_data(params(raw_params, prepared, "ae.anomaly_digit=9"), STAGES)
    check_against_data(params(raw_params, prepared, "ae.anomaly_digit=null"), STAGES)
    msg = rejected(params(raw_params, prepared, "ae.anomaly_digit=10"))
    assert "ae.anomaly_digit = 10" in msg and "10 classes (0..9)" in msg and "null" in msg


def test_pca_code_size_bounded_by_features_and_training_examples(raw_params, prepared):
    # 28x28 = 784 features; 4,000 train images - 10 % validation = 3,600 training examples
    check_against_data(params(raw_params, prepared, "ae.code_size=784"), STAGES)
    msg = rejected(params(raw_params, prepared, "ae.code_size=785"))
    assert "ae.code_size = 785" in msg and "C*H*W = 784" in msg and "<= 784" in msg
    # max_train caps the training examples below the feature count
    check_against_data(params(raw_params, prepared, "ae.code_size=50", "ae.max_train=50"), STAGES)
    msg = rejected(params(raw_params, prepared, "ae.code_size=51", "ae.max_train=50"))
    assert "training examples = 50" in msg and "<= 50" in msg
    # without PCA a wide code is allowed (an overcomplete AE is a legitimate model)
    check_against_data(
        params(raw_params, prepared, "ae.code_size=785", "ae.methods=[ae, sparse]"), STAGES
    )


def test_conv_blocks_must_divide_the_image_side(raw_params, prepared):
    conv = ["ae.archs=[mlp, conv]"]
    check_against_data(params(raw_params, prepared, *conv, "ae.conv_channels=[8, 16]"), STAGES)
    msg = rejected(params(raw_params, prepared, *conv, "ae.conv_channels=[8, 16, 32]"))
    assert "ae.conv_channels = [8, 16, 32]" in msg and "28x28" in msg and "divisible by 8" in msg
    check_against_data(params(raw_params, prepared, "ae.conv_channels=[8, 16, 32]"), STAGES)


@pytest.mark.parametrize("stage", STAGES)
def test_sequence_data_given_to_an_image_stage(raw_params, prepared, stage):
    """The data-level guard for sources whose kind does not tell (config.py rejects mnist1d)."""
    p = params(raw_params, prepared)
    bypass = p.model_copy(update={stage: p.stage(stage).model_copy(update={"dataset": "mnist1d"})})
    msg = rejected(bypass, [stage])
    assert f"{stage}.dataset = 'mnist1d'" in msg and "(1, 40)" in msg and "images" in msg


def test_only_the_stages_run_are_checked(raw_params, prepared):
    p = params(raw_params, prepared, "ae.anomaly_digit=10")
    check_against_data(p, ["pretrain"])
    assert "ae.anomaly_digit" in rejected(p, ["ae"])


def test_missing_prepared_data_is_a_data_error(raw_params, tmp_path):
    with pytest.raises(DataError, match="make data"):
        check_against_data(params(raw_params, tmp_path / "nothing"), ["ae"])


def test_pretrain_budgets_below_the_classes_or_without_gate_labels_exit_before_any_run(
    raw_params, prepared
):
    # N = 3,600 pool + 400 monitor = 4,000: floor(0.0025 x 4,000) = 10 labels, one per class
    ok = params(raw_params, prepared, "pretrain.label_fractions=[0.0025, 1.0]")
    check_against_data(ok, ["pretrain"])
    msg = rejected(params(raw_params, prepared, "pretrain.label_fractions=[0.002, 1.0]"))
    assert "0.002 x N = 4000 images = 8 labels" in msg and "10 classes" in msg
    assert ">= 0.0025" in msg
    # max_train shrinks N: 100 pool + 10 monitor = 110 -> the default 0.01 affords 1 label
    msg = rejected(params(raw_params, prepared, "pretrain.max_train=100"), ["pretrain"])
    assert "0.01 x N = 110 images = 1 labels" in msg and ">= 0.091" in msg
    # a largest fraction < 1 (config.py refuses it too) leaves the registered model no gate labels
    p = params(raw_params, prepared)
    bypass = p.model_copy(
        update={"pretrain": p.pretrain.model_copy(update={"label_fractions": [0.05, 0.1]})}
    )
    assert "no gate labels" in rejected(bypass, ["pretrain"])


@pytest.mark.parametrize("profile", ["default", "smoke", "bench"])
def test_repo_params_pass_gan_and_seq(raw_params, prepared, profile):
    check_against_data(params(raw_params, prepared, f"profile={profile}"), ["gan", "seq"])


@pytest.mark.parametrize(
    ("override", "stage", "expected"),
    [
        ("gan.dataset=synchars", "gan", "= 3 labels, fewer than the 36 classes"),
        ("gan.augment.fraction=0.002", "gan", "8 labels, fewer than the 10 classes"),
        ("seq.image_models.vit.kwargs.img_size=32", "seq", "set img_size: 28"),
    ],
)
def test_gan_and_seq_params_the_data_cannot_satisfy(
    raw_params, prepared, override, stage, expected
):
    assert expected in rejected(params(raw_params, prepared, override), [stage])


def test_gan_and_seq_need_their_kinds_of_data(raw_params):
    from adaptflow.config import ParamsError

    with pytest.raises(ParamsError, match="seq needs a sequence source"):
        build_params(raw_params, {"seq.dataset": "mnist"})
    with pytest.raises(ParamsError, match="gan needs images"):
        build_params(raw_params, {"gan.dataset": "mnist1d"})
    with pytest.raises(ParamsError, match="register_variant"):
        build_params(raw_params, {"gan.variants": ["dcgan"]})
    with pytest.raises(ParamsError, match="less than or equal to 0.01"):
        build_params(raw_params, {"gan.augment.fraction": 0.05})
