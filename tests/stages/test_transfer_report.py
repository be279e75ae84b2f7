"""The finetune stage's verdicts on hand-made measurements: each claim can hold and can fail."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adaptflow.evaluation.verdicts import FAILS, FEW_SEEDS, HOLDS
from adaptflow.stages import finetune as stage
from adaptflow.stages.transfer_report import add_convergence, crossing, verdicts

FRACS = [0.01, 0.1, 1.0]


def records(acc: dict, seeds=(0, 1, 2), curves: dict | None = None) -> list[dict]:
    """acc[(arm, fraction)] = mean test accuracy; seeds add +-0.002 jitter (paired noise)."""
    out = []
    for s in seeds:
        jitter = 0.002 * (s - 1)
        for (arm, f), a in acc.items():
            curve = (curves or {}).get((arm, f), [0.5, a, a])
            out.append(
                {
                    "backbone": "bb",
                    "arm": arm,
                    "fraction": f,
                    "seed": s,
                    "n_labels": int(1000 * f),
                    "test_acc": a + jitter + 0.001 * (arm == "finetune") * s,
                    "train_seconds": 10.0,
                    "epoch_seconds": 1.0,
                    "epochs": len(curve),
                    "trainable_params": 1000,
                    "curve": curve,
                    "epoch_times": list(np.arange(1, len(curve) + 1, dtype=float)),
                }
            )
    return out


def claim(claims, words: str) -> str:
    (verdict,) = [v for c, _, v in claims if words in c]
    return verdict


def textbook() -> dict:
    """Transfer helps, most at little data; features ahead at 1 %, fine-tuning at 100 %."""
    return {
        ("features", 0.01): 0.80,
        ("finetune", 0.01): 0.70,
        ("scratch", 0.01): 0.40,
        ("features", 0.1): 0.88,
        ("finetune", 0.1): 0.90,
        ("scratch", 0.1): 0.65,
        ("features", 1.0): 0.91,
        ("finetune", 1.0): 0.98,
        ("scratch", 1.0): 0.88,
    }


def test_textbook_numbers_make_every_claim_hold():
    df = add_convergence(records(textbook()), 0.95, 10)
    claims = verdicts(df, FRACS, 0.95)
    assert len(claims) == 5
    assert [v for _, _, v in claims] == [HOLDS] * 5
    # less data is a real bar: fine-tuning at 10 % must beat scratch at 100 %
    harder = textbook() | {("scratch", 1.0): 0.93}
    df = add_convergence(records(harder), 0.95, 10)
    assert claim(verdicts(df, FRACS, 0.95), "less data") == FAILS


def test_claims_fail_when_scratch_is_better():
    acc = {k: (1.0 - v if k[0] != "scratch" else v) for k, v in textbook().items()}
    acc = {k: min(max(v, 0.05), 0.99) for k, v in acc.items()}
    df = add_convergence(records(acc), 0.95, 10)
    claims = verdicts(df, FRACS, 0.95)
    assert claim(claims, "better accuracy") == FAILS
    assert claim(claims, "less data") == FAILS


def test_one_seed_is_never_evidence():
    df = add_convergence(records(textbook(), seeds=(0,)), 0.95, 10)
    assert {v for _, _, v in verdicts(df, FRACS, 0.95)} == {FEW_SEEDS}


def test_training_time_uses_a_common_target_and_censors_at_the_run_end():
    """finetune reaches 95 % of the best of both arms at epoch 1, scratch at epoch 3 (holds);
    swapped curves fail; an arm that never reaches it counts its whole run (a lower bound)."""
    fast, slow = [0.9, 0.95, 0.96], [0.3, 0.6, 0.95]
    curves = {("finetune", 1.0): fast, ("scratch", 1.0): slow}
    df = add_convergence(records(textbook(), curves=curves), 0.95, 10)
    row = df[(df.arm == "scratch") & (df.fraction == 1.0)].iloc[0]
    assert row.seconds_to_target == 3.0  # target 0.95 * 0.96 = 0.912: epoch 3
    assert claim(verdicts(df, FRACS, 0.95), "training time") == HOLDS
    swapped = {("finetune", 1.0): slow, ("scratch", 1.0): fast}
    df = add_convergence(records(textbook(), curves=swapped), 0.95, 10)
    assert claim(verdicts(df, FRACS, 0.95), "training time") != HOLDS
    stalled = {("finetune", 1.0): [0.2, 0.25, 0.3], ("scratch", 1.0): fast}
    df = add_convergence(records(textbook(), curves=stalled), 0.95, 10)
    r = df[(df.arm == "finetune") & (df.fraction == 1.0)].iloc[0]
    assert math.isnan(r.seconds_to_target) and r.censor_seconds == 3.0
    # a fine-tuning run that never gets there cannot win on time, however short its run
    assert claim(verdicts(df, FRACS, 0.95), "training time") == FAILS
    cheap = records(textbook(), curves=stalled)
    for rec in cheap:  # fine-tuning epochs 10x cheaper (e.g. few unfrozen blocks)
        if rec["arm"] == "finetune":
            rec["epoch_times"] = [0.1, 0.2, 0.3]
    df = add_convergence(cheap, 0.95, 10)
    assert claim(verdicts(df, FRACS, 0.95), "training time") == FAILS


def test_crossing_is_located_in_log_space_or_reported_absent():
    df = add_convergence(records(textbook()), 0.95, 10)
    text = crossing(df, "bb", FRACS)
    assert "between 1% and 10%" in text and text.startswith("feature extraction ahead below")
    flat = {k: (0.93 if k[0] == "features" else v) for k, v in textbook().items()}
    df = add_convergence(records(flat), 0.95, 10)
    assert "between 10% and 100%" in crossing(df, "bb", FRACS)
    ahead = {k: (0.99 if k[0] == "features" else v) for k, v in textbook().items()}
    df = add_convergence(records(ahead), 0.95, 10)
    assert crossing(df, "bb", FRACS).startswith("no crossing")


def test_steps_budget_and_monitor_halves():
    assert stage.steps_budget(3600, 64, 3, 60) == 3  # 57 steps/epoch: the epochs rule
    assert stage.steps_budget(36, 64, 3, 60) == 60  # 1 step/epoch: raised to 60 steps
    monitor = np.arange(100, 140)
    pick, gate = stage.monitor_halves(monitor, 0)
    assert len(pick) == len(gate) == 20 and not set(pick) & set(gate)
    assert set(pick) | set(gate) == set(monitor)
    assert np.array_equal(pick, stage.monitor_halves(monitor, 0)[0])


@pytest.mark.parametrize(
    "arch,kwargs",
    [
        ("resnet10t", {"channels": [8, 16, 32, 64], "stem_width": 8}),
        (
            "vit_tiny_patch16_224",
            {"img_size": 28, "patch_size": 7, "depth": 1, "embed_dim": 32, "num_heads": 2},
        ),
    ],
)
def test_features_arm_as_one_network_gives_the_heads_logits(arch, kwargs):
    import torch

    from adaptflow.models.backbones import build_backbone, embed

    torch.manual_seed(0)
    source = build_backbone(arch, 36, kwargs=kwargs).eval()
    head = torch.nn.Linear(source.num_features, 10)
    x = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    net = stage._with_head(source, head, 10)
    with torch.no_grad():
        expected = head(torch.from_numpy(embed(source, x, "cpu")))
        got = net(torch.from_numpy(x))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert source.get_classifier().out_features == 36  # the source model is not modified


def test_a_source_model_of_another_architecture_is_refused():
    """A stage run alone takes the registry's champion, which may predate a backbone change."""
    from adaptflow.config import BackboneConfig
    from adaptflow.models.backbones import build_backbone
    from adaptflow.stages.features import check_architecture

    bb = BackboneConfig(arch="resnet10t", kwargs={"channels": [8, 16, 32, 64], "stem_width": 8})
    same = build_backbone("resnet10t", 36, kwargs=bb.kwargs)  # another head size is fine
    check_architecture(same, bb, 1, "models:/s/1", "resnet")
    old = build_backbone("resnet10t", 36, kwargs={"channels": [16, 32, 64, 128], "stem_width": 8})
    with pytest.raises(ValueError, match=r"models:/s/2 for backbone 'resnet' is not the network"):
        check_architecture(old, bb, 1, "models:/s/2", "resnet")
