"""Transfer arms on tiny real data: head on frozen features, logistic regression, fine-tuning
(the last N blocks with layer decay and warm-up), scratch; frozen parts really stay frozen."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptflow.methods.transfer import (
    FineTune,
    accuracy,
    finetune,
    fit_logreg,
    lr_schedule,
    train_head,
)
from adaptflow.models.backbones import embed, param_groups, set_trainable
from adaptflow.training import StepContext
from adaptflow.training.loaders import array_loader
from tests.models.test_backbones import FAMILIES, HEAD, digits28, tiny

CPU = torch.device("cpu")
CHANCE_5 = 0.2


@pytest.fixture(scope="module")
def digits():
    """Source task: digits 0-4; target task: digits 5-9 (labels 0-4), each train/test."""
    x, y = digits28()
    src, tgt = y < 5, y >= 5
    xs, ys, xt, yt = x[src], y[src], x[tgt], y[tgt] - 5
    return {
        "source": (xs[:400], ys[:400]),
        "train": (xt[:300], yt[:300]),
        "test": (xt[500:], yt[500:]),
    }


@pytest.fixture(scope="module")
def source_resnet(digits):
    """A tiny ResNet trained from scratch on the source digits: the 'pretrained' backbone."""
    model = tiny("resnet", num_classes=5)
    _, history = finetune(
        model, *digits["source"], unfreeze="all", epochs=3, lr=3e-3, layer_decay=1.0,
        warmup_steps=5, weight_decay=0.01, batch_size=32, seed=0, device=CPU,
    )  # fmt: skip
    assert history.epochs[-1]["acc"] > 0.8
    return model


def _decreasing(history, key="loss", by=0.1):
    losses = history.series(key)
    return losses[-1] < losses[0] * (1 - by)


def test_head_on_frozen_features_learns_the_target(digits, source_resnet):
    f_train = embed(source_resnet, digits["train"][0], CPU)
    f_test = embed(source_resnet, digits["test"][0], CPU)
    head, history = train_head(
        f_train, digits["train"][1], 5, epochs=15, lr=3e-2, batch_size=32, weight_decay=0.0,
        seed=0, device=CPU, monitor=(f_test, digits["test"][1]),
    )  # fmt: skip
    assert isinstance(head, torch.nn.Linear) and head.out_features == 5
    assert _decreasing(history) and _decreasing(history, "monitor_loss")
    acc = accuracy(head, f_test, digits["test"][1], CPU)
    assert acc > 0.55  # chance is 0.2
    # no selection: the returned head is the last epoch's
    assert acc == pytest.approx(history.epochs[-1]["monitor_acc"], abs=1e-6)
    assert history.best_epoch >= 1 and len(history.epochs) == 15


def test_train_head_is_seeded(digits, source_resnet):
    f = embed(source_resnet, digits["train"][0][:64], CPU)
    y = digits["train"][1][:64]
    kw = dict(epochs=2, lr=1e-2, batch_size=16, weight_decay=0.0, device=CPU)
    a, _ = train_head(f, y, 5, seed=3, **kw)
    b, _ = train_head(f, y, 5, seed=3, **kw)
    c, _ = train_head(f, y, 5, seed=4, **kw)
    assert torch.equal(a.weight, b.weight) and not torch.equal(a.weight, c.weight)


def test_logreg_on_frozen_features_learns_the_target(digits, source_resnet):
    f_train = embed(source_resnet, digits["train"][0], CPU)
    f_test = embed(source_resnet, digits["test"][0], CPU)
    model = fit_logreg(f_train, digits["train"][1], C=1.0, seed=0)
    assert model.score(f_test, digits["test"][1]) > 0.6
    weak = fit_logreg(f_train, digits["train"][1], C=1e-6, seed=0)  # C is the inverse strength
    assert model.score(f_test, digits["test"][1]) > weak.score(f_test, digits["test"][1])


@pytest.mark.parametrize("family", FAMILIES)
def test_frozen_arm_moves_only_the_head(family, digits):
    model = tiny(family, num_classes=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _, history = finetune(
        model, *digits["train"], unfreeze=0, epochs=1, lr=1e-2, layer_decay=0.7,
        warmup_steps=2, weight_decay=0.05, batch_size=32, seed=0, device=CPU,
    )  # fmt: skip
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.startswith(HEAD[family])}
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == trainable  # every head tensor moved; no backbone weight or buffer did
    if family == "resnet":  # BatchNorm running stats included: frozen BN stayed in eval
        assert any(k.endswith("running_mean") for k in before)
        assert all(
            not k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed
        )


@pytest.mark.parametrize("family", FAMILIES)
def test_unfreeze_one_block_moves_it_and_the_head_only(family, digits):
    model = tiny(family, num_classes=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    finetune(
        model, *digits["train"], unfreeze=1, epochs=1, lr=1e-2, layer_decay=0.7,
        warmup_steps=2, weight_decay=0.05, batch_size=64, seed=0, device=CPU,
    )  # fmt: skip
    last = "layer4." if family == "resnet" else ("blocks.1.", "norm.")
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed and all(k.startswith(HEAD[family]) or k.startswith(last) for k in changed)
    assert any(k.startswith(last) for k in changed)


def test_finetune_from_the_source_backbone_learns_the_target(digits, source_resnet):
    import copy

    model = copy.deepcopy(source_resnet)
    model.reset_classifier(5)  # a new head for the target classes
    method, history = finetune(
        model, *digits["train"], unfreeze=1, epochs=4, lr=3e-3, layer_decay=0.7,
        warmup_steps=5, weight_decay=0.01, batch_size=32, seed=0, device=CPU,
        monitor=digits["test"],
    )  # fmt: skip
    assert isinstance(method, FineTune) and method.scheduler is None  # detached after the run
    assert _decreasing(history)
    acc = accuracy(method, *digits["test"], CPU)
    assert acc > 0.55  # chance is 0.2
    assert acc == pytest.approx(history.epochs[-1]["monitor_acc"], abs=1e-6)  # last epoch kept


@pytest.mark.parametrize(
    ("family", "epochs", "lr", "floor"), [("resnet", 5, 3e-3, 0.6), ("vit", 8, 3e-3, 0.35)]
)
def test_scratch_learns_the_target(family, epochs, lr, floor, digits):
    model = tiny(family, num_classes=5)
    method, history = finetune(
        model, *digits["train"], unfreeze="all", epochs=epochs, lr=lr, layer_decay=1.0,
        warmup_steps=10, weight_decay=0.01, batch_size=32, seed=0, device=CPU,
        monitor=digits["test"],
    )  # fmt: skip
    assert all(p.requires_grad for p in model.parameters())
    assert _decreasing(history, by=0.2)
    assert len(history.series("monitor_acc")) == epochs
    assert accuracy(method, *digits["test"], CPU) > floor > CHANCE_5


@pytest.mark.parametrize("family", FAMILIES)
def test_warmup_reaches_each_groups_layer_decayed_lr(family):
    lr, d, warmup = 0.01, 0.5, 4
    model = tiny(family)
    set_trainable(model, "all")
    optimizer = torch.optim.AdamW(param_groups(model, lr, 0.0, d))
    scales = [g["lr_scale"] for g in optimizer.param_groups]
    assert len(set(scales)) > 2
    scheduler = lr_schedule(optimizer, lr, warmup, total_steps=20)
    lrs = [[g["lr"] for g in optimizer.param_groups]]
    for t in range(1, 21):
        scheduler.step_update(t)
        lrs.append([g["lr"] for g in optimizer.param_groups])
    lrs = np.array(lrs)  # (step, group)
    target = lr * np.array(scales)
    assert np.all(lrs[0] < target) and np.all(lrs[0] > 0)
    assert np.all(np.diff(lrs[: warmup + 1], axis=0) > 0)  # linear warm-up
    np.testing.assert_allclose(lrs[warmup], target)  # scale applied once, not squared
    assert np.all(np.diff(lrs[warmup:], axis=0) <= 1e-12) and np.all(lrs[-1] < 0.05 * target)


def test_finetune_update_steps_the_schedule(digits):
    lr, warmup = 0.01, 3
    model = tiny("resnet", num_classes=5)
    set_trainable(model, 2)
    method = FineTune(model)
    optimizer = torch.optim.AdamW(param_groups(model, lr, 0.0, 0.5))
    method.scheduler = lr_schedule(optimizer, lr, warmup, total_steps=10)
    method.optimizers = [optimizer]
    head = next(g for g in optimizer.param_groups if g["lr_scale"] == 1.0)
    seen = [head["lr"]]
    step = StepContext(CPU, amp=False)
    for batch in array_loader(*digits["train"], batch_size=32, shuffle=False):
        method.update(batch, step)
        seen.append(head["lr"])
        if len(seen) > warmup:
            break
    assert seen[0] < seen[1] < seen[2] < seen[3] == pytest.approx(lr)


def test_finetune_rejects_a_bad_unfreeze(digits):
    with pytest.raises(ValueError, match="has 4 blocks"):
        finetune(
            tiny("resnet", num_classes=5), *digits["train"], unfreeze=5, epochs=1, lr=1e-3,
            layer_decay=0.7, warmup_steps=0, weight_decay=0.0, batch_size=32, seed=0, device=CPU,
        )  # fmt: skip
