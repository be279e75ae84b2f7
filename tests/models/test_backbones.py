"""timm backbones: building, blocks and unfreezing, layer decay, checkpoints, hub offline, embed."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import timm
import torch
from torch import nn

from adaptflow.models import backbones
from adaptflow.models.backbones import (
    CheckpointFileError,
    HubUnavailableError,
    block_names,
    build_backbone,
    embed,
    feature_dim,
    load_weights,
    param_groups,
    set_trainable,
    train_mode,
)
from adaptflow.training import save_checkpoint

CPU = torch.device("cpu")
# tiny members of both families: a ResNet (BatchNorm, 4 stages) and a ViT (LayerNorm, 2 blocks)
FAMILIES = {
    "resnet": ("resnet10t", {"channels": (8, 16, 32, 64), "stem_width": 8}),
    "vit": (
        "vit_tiny_patch16_224",
        {"img_size": 28, "patch_size": 7, "depth": 2, "embed_dim": 32, "num_heads": 2},
    ),
    # the shipped ViT's shape (params.yaml): average pooling, no class token, so its final
    # LayerNorm is timm's fc_norm after the pool, part of the head (norm is an Identity)
    "vit_avg": (
        "vit_tiny_patch16_224",
        {
            "img_size": 28,
            "patch_size": 7,
            "depth": 2,
            "embed_dim": 32,
            "num_heads": 2,
            "global_pool": "avg",
            "class_token": False,
        },
    ),
}
# per family: the parameter-name prefix of block i, of the head, and what follows the last block
BLOCK = {"resnet": "layer{}.", "vit": "blocks.{}.", "vit_avg": "blocks.{}."}
HEAD = {"resnet": ("fc.",), "vit": ("head.",), "vit_avg": ("head.", "fc_norm.")}
AFTER_LAST_BLOCK = {"resnet": (), "vit": ("norm.",), "vit_avg": ()}
N_BLOCKS = {"resnet": 4, "vit": 2, "vit_avg": 2}


def tiny(family: str, num_classes: int = 10, seed: int = 0, extra: dict | None = None, **kw):
    arch, kwargs = FAMILIES[family]
    torch.manual_seed(seed)
    return build_backbone(arch, num_classes, kwargs=kwargs | (extra or {}), **kw)


@cache
def digits28() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits upsampled x3 and padded to 28x28: (1797, 1, 28, 28) in [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.kron(d.images / 16.0, np.ones((3, 3)))
    x = np.pad(x, ((0, 0), (2, 2), (2, 2)))[:, None].astype(np.float32)
    return x, d.target.astype(np.int64)


def _head_key(family: str, key: str) -> bool:
    return key.startswith(HEAD[family])


@pytest.mark.parametrize("family", FAMILIES)
def test_build_gives_the_class_count_and_reset_classifier_a_new_one(family):
    x = torch.from_numpy(digits28()[0][:3])
    model = tiny(family, num_classes=36)
    assert model(x).shape == (3, 36)
    model.reset_classifier(10)
    assert model(x).shape == (3, 10)
    assert set(set_trainable(model, 0)) == {
        n for n, _ in model.named_parameters() if _head_key(family, n)
    }


def test_small_input_drops_the_resnet_max_pool_only():
    x = torch.zeros(2, 1, 28, 28)

    def sides(model):
        feats = model.forward_intermediates(x, intermediates_only=True)[1:]  # layer1..layer4
        return [f.shape[-1] for f in feats]

    assert sides(tiny("resnet", small_input=True)) == [14, 7, 4, 2]
    assert sides(tiny("resnet", small_input=False)) == [7, 4, 2, 1]
    vit_small, vit = tiny("vit", small_input=True), tiny("vit", small_input=False)
    assert [n for n, _ in vit_small.named_modules()] == [n for n, _ in vit.named_modules()]
    assert torch.equal(vit_small(x), vit(x))  # same seed, same network


def test_unknown_arch_or_kwarg_is_named():
    with pytest.raises(ValueError, match="resnet10tt"):
        build_backbone("resnet10tt", 10)
    with pytest.raises(ValueError, match="resnet10t.*stem_wdth"):
        build_backbone("resnet10t", 10, kwargs={"stem_wdth": 8})


@pytest.mark.parametrize("family", FAMILIES)
def test_block_names_come_from_timms_coarse_groups(family):
    expected = {
        "resnet": ["layer1", "layer2", "layer3", "layer4"],
        "vit": ["blocks.0", "blocks.1"],
        "vit_avg": ["blocks.0", "blocks.1"],
    }
    assert block_names(tiny(family)) == expected[family]


def _expected_trainable(family: str, model: nn.Module, n: int) -> set[str]:
    first = 1 if family == "resnet" else 0
    blocks = [BLOCK[family].format(i + first) for i in range(N_BLOCKS[family])]
    prefixes = HEAD[family] + tuple(blocks[len(blocks) - n :])
    if n:
        prefixes += AFTER_LAST_BLOCK[family]
    return {name for name, _ in model.named_parameters() if name.startswith(prefixes)}


@pytest.mark.parametrize("family", FAMILIES)
def test_unfreeze_n_trains_exactly_the_head_and_the_last_n_blocks(family):
    model = tiny(family)
    every = {n for n, _ in model.named_parameters()}
    for n in range(N_BLOCKS[family] + 1):
        trainable = set(set_trainable(model, n))
        assert trainable == _expected_trainable(family, model, n), n
        assert trainable == {name for name, p in model.named_parameters() if p.requires_grad}
    assert len(set(set_trainable(model, 0))) < len(set(set_trainable(model, 1))) < len(every)
    assert set(set_trainable(model, "all")) == every  # the stem too
    with pytest.raises(ValueError, match=f"has {N_BLOCKS[family]} blocks"):
        set_trainable(model, N_BLOCKS[family] + 1)
    for bad in (-1, True, "some"):
        with pytest.raises(ValueError, match="unfreeze"):
            set_trainable(model, bad)


@pytest.mark.parametrize(
    ("family", "kind", "last"),
    [("resnet", nn.BatchNorm2d, "layer4."), ("vit", nn.Dropout, "blocks.1.")],
)
def test_train_mode_keeps_frozen_modules_in_eval(family, kind, last):
    model = tiny(family, extra={"proj_drop_rate": 0.5} if family == "vit" else {})
    set_trainable(model, 1)
    train_mode(model)
    modes = {n: m.training for n, m in model.named_modules() if isinstance(m, kind)}
    if family == "vit":  # outside the blocks: the stem's dropout is frozen, the head's is not
        assert modes.pop("pos_drop") is False and modes.pop("head_drop") is True
    assert len(modes) >= 2 and all(mode == n.startswith(last) for n, mode in modes.items()), modes
    assert model.training and model.get_classifier().training
    set_trainable(model, "all")
    assert all(m.training for m in train_mode(model).modules())


@pytest.mark.parametrize("family", FAMILIES)
def test_layer_decay_scales_lr_from_the_head_down(family):
    lr, d = 0.1, 0.5
    model = tiny(family)
    set_trainable(model, "all")
    lr_of = {id(p): g["lr"] for g in param_groups(model, lr, 0.01, d) for p in g["params"]}
    by_name = {n: lr_of[id(p)] for n, p in model.named_parameters()}
    first = 1 if family == "resnet" else 0
    for name, got in by_name.items():
        if name.startswith(HEAD[family]):
            want = lr
        elif name.startswith(AFTER_LAST_BLOCK[family]):
            want = lr * d
        else:
            blocks = [
                i
                for i in range(N_BLOCKS[family])
                if name.startswith(BLOCK[family].format(i + first))
            ]
            k_from_top = N_BLOCKS[family] - blocks[0] if blocks else N_BLOCKS[family] + 1  # stem
            want = lr * d**k_from_top
        assert got == pytest.approx(want), name
    # frozen parameters are in no group; the trainable keep their scale
    set_trainable(model, 1)
    groups = param_groups(model, lr, 0.01, d)
    assert {id(p) for g in groups for p in g["params"]} == {
        id(p) for p in model.parameters() if p.requires_grad
    }
    assert sorted({g["lr"] for g in groups}) == pytest.approx([lr * d, lr])
    assert all(g["lr"] == pytest.approx(lr * g["lr_scale"]) for g in groups)


# -- checkpoints ---------------------------------------------------------------------------


def test_a_checkpoint_for_another_class_count_loads_without_its_head(tmp_path):
    source = tiny("resnet", num_classes=36, seed=1)
    torch.save(source.state_dict(), tmp_path / "source.pt")
    target = tiny("resnet", num_classes=10, seed=2)
    own_head = target.fc.weight.detach().clone()
    load_weights(target, tmp_path / "source.pt")
    src = source.state_dict()
    for k, v in target.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(v, src[k]), k
    assert torch.equal(target.fc.weight, own_head)


def test_an_adaptflow_checkpoint_of_a_wrapped_model_loads(tmp_path):
    class Wrapper(nn.Module):  # what the Trainer saves for a method holding the net as .model
        def __init__(self, model):
            super().__init__()
            self.model = model

    source = tiny("vit", seed=1)
    save_checkpoint(tmp_path / "best.pt", Wrapper(source), epoch=3)
    target = tiny("vit", seed=2)
    load_weights(target, tmp_path / "best.pt")
    assert all(
        torch.equal(a, b) for a, b in zip(target.parameters(), source.parameters(), strict=True)
    )


def test_a_checkpoint_of_another_architecture_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "vit.pt"
    torch.save(tiny("vit").state_dict(), path)
    with pytest.raises(CheckpointFileError, match=r"vit\.pt.*resnet10t.*missing") as e:
        load_weights(tiny("resnet"), path)
    assert "arch and kwargs" in str(e.value)
    wider = build_backbone("resnet10t", 10, kwargs={"channels": (8, 16, 32, 128), "stem_width": 8})
    torch.save(wider.state_dict(), path)
    with pytest.raises(
        CheckpointFileError,
        match=r"layer4\.0\.conv1\.weight \(128, 32, 3, 3\) vs model \(64, 32, 3, 3\)",
    ):
        load_weights(tiny("resnet"), path)


def test_missing_corrupt_or_empty_files_are_refused_naming_the_file(tmp_path):
    model = tiny("resnet")
    with pytest.raises(CheckpointFileError, match="nope.pt not found"):
        load_weights(model, tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 50)
    with pytest.raises(CheckpointFileError, match="garbage.pt is not a readable torch checkpoint"):
        load_weights(model, garbage)
    good = tmp_path / "good.pt"
    torch.save(model.state_dict(), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(
        CheckpointFileError, match="truncated.pt is not a readable torch checkpoint"
    ):
        load_weights(model, truncated)
    torch.save({"epoch": 3}, tmp_path / "meta.pt")
    with pytest.raises(CheckpointFileError, match="meta.pt holds no state_dict"):
        load_weights(model, tmp_path / "meta.pt")


# -- hub -----------------------------------------------------------------------------------


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def _no_network(monkeypatch) -> None:
    """Any connection attempt fails the test (what made these paths slow was waiting on one)."""
    import socket

    def refuse(*args, **kwargs):
        pytest.fail(f"a network connection was attempted: {args[1:] or kwargs}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_hub_offline_fails_fast_with_the_fix(empty_hf_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(backbones, "_hub_reachable", lambda: pytest.fail("probed while offline"))
    _no_network(monkeypatch)  # fails fast: no connection is even tried (no timeout to wait out)
    with pytest.raises(
        HubUnavailableError,
        match=r"'resnet10t' need internet \(HF_HUB_OFFLINE is set\).*not in the local cache; use source.pretrained: source",
    ):
        build_backbone("resnet10t", 10, hub=True)


def test_hub_unreachable_fails_fast_with_the_fix(empty_hf_cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(backbones, "_hub_reachable", lambda: False)  # no traffic from tests
    _no_network(monkeypatch)  # after the probe says no, the load is offline: no connection
    with pytest.raises(HubUnavailableError, match=r"huggingface.co unreachable.*\.pt state_dict"):
        build_backbone("vit_tiny_patch16_224", 10, hub=True, kwargs={"img_size": 28})


def test_hub_weights_in_the_local_cache_load_offline(empty_hf_cache, monkeypatch):
    import safetensors.torch

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reference = timm.create_model("resnet10t")  # timm's shapes, as the hub would serve them
    repo = empty_hf_cache / "models--timm--resnet10t.c3_in1k"
    commit = "0" * 40
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    safetensors.torch.save_file(
        reference.state_dict(), repo / "snapshots" / commit / "model.safetensors"
    )
    model = build_backbone("resnet10t", 10, hub=True)
    assert torch.equal(model.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)
    assert model.fc.out_features == 10 and model.conv1[0].in_channels == 1


def test_hub_refuses_kwargs_that_change_weight_shapes():
    with pytest.raises(ValueError, match=r"\['channels', 'stem_width'\].*change weight shapes"):
        build_backbone("resnet10t", 10, hub=True, kwargs=FAMILIES["resnet"][1])


# -- features ------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_embed_gives_deterministic_prelogits_features(family):
    x = digits28()[0][:40]
    model = tiny(family)
    model.train()  # embed must switch to eval: BatchNorm batch stats would make rows depend on the batch
    f = embed(model, x, CPU, batch_size=16)
    assert f.shape == (40, model.num_features) and f.dtype == np.float32
    assert feature_dim(model) == model.num_features
    np.testing.assert_array_equal(f, embed(model, x, CPU, batch_size=40))
    with torch.no_grad():
        logits = model.get_classifier()(torch.from_numpy(f))
        np.testing.assert_allclose(logits.numpy(), model(torch.from_numpy(x)).numpy(), atol=1e-5)
    assert np.abs(f[0] - f[1]).max() > 1e-4  # features of two different digits differ
