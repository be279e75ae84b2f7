"""The da report's verdicts, from hand-made per-seed records: each claim can fail, a collapsed
representation is not a narrowed gap, and Holm's correction demotes marginal claims."""

import pandas as pd
import pytest

from adaptflow.evaluation.verdicts import FAILS, FEW_SEEDS, HOLDS, NOISE
from adaptflow.stages import da_report


def records(rows: dict[str, list[tuple]], pair: str = "p") -> pd.DataFrame:
    """rows: method -> per seed (target_acc, pad, mmd, source validation accuracy). The source
    TEST accuracy is set at chance everywhere: a verdict that read it would see every model
    collapsed."""
    out = []
    for method, per_seed in rows.items():
        for seed, (acc, pad, mmd, src) in enumerate(per_seed):
            out.append(
                dict(
                    pair=pair,
                    method=method,
                    seed=seed,
                    target_acc=acc,
                    pad=pad,
                    mmd=mmd,
                    chosen_source_val=src,
                    source_test_acc=0.1,
                )
            )
    return pd.DataFrame(out)


BASE = [(0.70, 1.8, 0.30, 0.98), (0.72, 1.7, 0.32, 0.97), (0.69, 1.8, 0.31, 0.98)]


def verdicts(df, methods):
    return {c: r.verdict for c, _, r in da_report.claims(df, "p", methods)}


def test_adaptation_that_helps_holds_and_one_that_hurts_fails():
    good = [(0.90, 1.2, 0.10, 0.98), (0.91, 1.1, 0.11, 0.97), (0.92, 1.2, 0.09, 0.98)]
    bad = [(0.60, 1.9, 0.40, 0.98), (0.61, 1.9, 0.41, 0.97), (0.59, 1.95, 0.42, 0.98)]
    v = verdicts(
        records({"source_only": BASE, "mcc": good, "dann": bad}), ["source_only", "mcc", "dann"]
    )
    assert v["p: mcc beats source-only (target acc)"] == HOLDS
    assert v["p: mcc narrows the gap (proxy A-distance)"] == HOLDS
    assert v["p: mcc narrows the gap (MMD²)"] == HOLDS
    assert v["p: dann beats source-only (target acc)"] == FAILS
    assert v["p: dann narrows the gap (MMD²)"] == FAILS


def test_collapsed_features_do_not_narrow_the_gap():
    # PAD and MMD² fall because one seed's features carry nothing (source accuracy at chance):
    # that is not adaptation, and not the baseline being better either
    collapsed = [(0.72, 0.1, 0.001, 0.98), (0.11, 0.0, 0.0, 0.10), (0.71, 0.2, 0.002, 0.97)]
    df = records({"source_only": BASE, "coral": collapsed})
    out = {c: (m, r.verdict) for c, m, r in da_report.claims(df, "p", ["source_only", "coral"])}
    measured, verdict = out["p: coral narrows the gap (proxy A-distance)"]
    assert verdict == da_report.COLLAPSED and "seeds [1]" in measured
    assert out["p: coral narrows the gap (MMD²)"][1] == da_report.COLLAPSED


@pytest.mark.parametrize(
    ("source_acc", "collapsed"),
    # source_only keeps 0.98, 0.97, 0.98 with 10 classes (chance 0.1): half of the above-chance
    # part is 0.44 / 0.435 / 0.44, so the boundary is at 0.54 / 0.535 / 0.54
    [(0.97, False), (0.80, False), (0.55, False), (0.53, True), (0.10, True)],
)
def test_the_collapse_boundary_is_half_the_above_chance_source_accuracy(source_acc, collapsed):
    # a method that gives up some source accuracy for the target is not called collapsed
    gap = [(0.8, 1.0, 0.1, source_acc if i == 1 else 0.97) for i in range(3)]
    df = records({"source_only": BASE, "coral": gap})
    v = verdicts(df, ["source_only", "coral"])["p: coral narrows the gap (MMD²)"]
    assert v == (da_report.COLLAPSED if collapsed else HOLDS)


def test_collapsed_features_say_nothing_about_the_gap_either_way():
    # a widened gap measured on features that lost the task is no evidence either
    worse = [(0.72, 1.9, 0.5, 0.98), (0.11, 1.95, 0.6, 0.10), (0.71, 1.9, 0.55, 0.97)]
    v = verdicts(records({"source_only": BASE, "coral": worse}), ["source_only", "coral"])
    assert v["p: coral narrows the gap (MMD²)"] == da_report.COLLAPSED
    assert v["p: coral beats source-only (target acc)"] == NOISE  # accuracy is judged as is


def test_a_baseline_near_chance_leaves_no_gap_to_narrow():
    # source_only lost the task on seed 2 (0.12 with chance 0.1): its near-zero MMD² is no
    # "before"; the method's features are fine and its gap claims are not shown
    base = [*BASE[:2], (0.12, 0.2, 0.001, 0.12)]
    good = [(0.90, 1.2, 0.10, 0.98), (0.91, 1.1, 0.11, 0.97), (0.92, 1.2, 0.09, 0.98)]
    df = records({"source_only": base, "mcc": good})
    out = {c: (m, r.verdict) for c, m, r in da_report.claims(df, "p", ["source_only", "mcc"])}
    assert out["p: mcc narrows the gap (MMD²)"][1] == da_report.COLLAPSED
    assert "seeds [2]" in out["p: mcc narrows the gap (MMD²)"][0]


def test_mmd_is_not_judged_on_its_own_loss_and_one_seed_is_not_enough():
    df = records({"source_only": BASE[:1], "mmd": [(0.9, 1.0, 0.01, 0.98)]})
    v = verdicts(df, ["source_only", "mmd"])
    assert "p: mmd narrows the gap (MMD²)" not in v
    assert v["p: mmd beats source-only (target acc)"] == FEW_SEEDS
    assert v["p: mmd narrows the gap (proxy A-distance)"] == FEW_SEEDS


def test_without_source_only_there_is_no_verdict():
    df = records({"mcc": BASE})
    [(claim, measured, r)] = da_report.claims(df, "p", ["mcc"])
    assert r.verdict == FEW_SEEDS and "source_only not run" in measured


def _publish(monkeypatch, df: pd.DataFrame, methods: list[str]) -> tuple[dict, str]:
    """da_report.publish on hand-made records (every pair in `df`): (summary, report text)."""
    logged = {}
    monkeypatch.setattr(
        "adaptflow.tracking.runs.log_text", lambda text, name: logged.__setitem__(name, text)
    )
    labels = list(dict.fromkeys(df["pair"]))

    class Cfg:
        selection, steps, checkpoints, batch_size, lr = "dev", 10, 2, 8, 1e-3
        seeds, grid = [0, 1, 2], {}
        pairs = {
            label: type("PC", (), {"source": "a", "target": "b", "reference": None})()
            for label in labels
        }

    Cfg.methods = methods
    info = {
        "protocol": "split",
        "steps": 10,
        "n_source": 1,
        "n_target": 1,
        "n_target_train": 1,
        "n_scored": 1,
        "n_classes": 10,
        "input_shape": (1, 8, 8),
        "preprocessing": {},
    }
    extras = {label: {"inputs": {"pad": 1.9}, "pair": info} for label in labels}
    recs = [
        r
        | {
            "oracle_selected_acc": r["target_acc"],
            # m1 ran a grid: it has no single last checkpoint
            "last_acc": float("nan") if r["method"] == "m1" else r["target_acc"],
            "train_seconds": 1.0,
            "chosen_weight_ess": 0.01 if r["method"] == "m0" else 0.5,
        }
        for r in df.to_dict("records")
    ]
    summary = da_report.publish(recs, Cfg, {}, extras)
    return summary, logged["da/report.md"]


def test_holm_family_is_the_pair_whatever_ran_beside_it(monkeypatch):
    # one marginal gain (p ~ 0.0065): it survives Holm over its pair's 3 claims (0.025 / 3)
    # but would not over two pairs' 6 (0.025 / 6); the verdict must not depend on the grouping
    gains = (0.030, 0.036, 0.024)
    pads = (1.75, 1.75, 1.85)  # around BASE's: within noise
    m0 = [(a + g, p, m, s) for (a, _, m, s), g, p in zip(BASE, gains, pads, strict=True)]
    p = records({"source_only": BASE, "m0": m0}, pair="p")
    q = records({"source_only": BASE, "m0": m0}, pair="q")
    alone, report_alone = _publish(monkeypatch, p, ["source_only", "m0"])
    both, report_both = _publish(monkeypatch, pd.concat([p, q]), ["source_only", "m0"])
    assert alone["da/claims_holding_holm"] == 1
    assert both["da/claims_holding_holm"] == 2  # each pair's own family: both survive
    claim = "| p: m0 beats source-only (target acc) |"
    (row_alone,) = [line for line in report_alone.splitlines() if line.startswith(claim)]
    (row_both,) = [line for line in report_both.splitlines() if line.startswith(claim)]
    assert row_alone == row_both and row_alone.endswith(f"| {HOLDS} |")


def test_publish_counts_holm_corrected_claims(monkeypatch):
    # m0: a large consistent gain; m1..m5: a gain that holds alone (p ~ 0.0065) but not
    # after Holm over ~17 tests
    rows = {
        "source_only": BASE,
        "m0": [(0.95, 1.8, 0.3, 0.98), (0.96, 1.7, 0.32, 0.97), (0.95, 1.8, 0.31, 0.98)],
    }
    for i in range(1, 6):
        rows[f"m{i}"] = [
            (a + g, p, m, s) for (a, p, m, s), g in zip(BASE, (0.030, 0.036, 0.024), strict=True)
        ]
    summary, report = _publish(
        monkeypatch, records(rows), ["source_only"] + [f"m{i}" for i in range(6)]
    )
    assert summary["da/claims_holding"] == 6  # every method's accuracy claim alone
    assert summary["da/claims_holding_holm"] == 1  # only m0's survives the correction
    assert f"{HOLDS} (Holm: {NOISE})" in report
    assert summary["da/claims"] == pytest.approx(6 + 6 * 2)
    assert "m0 1.0 % (lowest seed 1.0 %), m1 50.0 %" in report and "Below 5 % on a seed" in report
    (m1_row,) = [line for line in report.splitlines() if line.startswith("| m1 |")]
    assert m1_row.split(" | ")[3] == "–"  # the last-checkpoint column


@pytest.mark.parametrize(
    ("source_val", "selection", "warned"),
    # the registered method's chosen candidates on the source validation pick half, mean over
    # seeds; entropy and SND do not read the source loss, so they are never "saturated" by it
    # (source_val is itself an accuracy: near 100 % it ties and is no confidence ranking)
    [
        (0.995, "dev", True),
        (0.991, "iwcv", True),
        (0.985, "dev", False),
        (1.0, "snd", False),
        (1.0, "source_val", False),
    ],
)
def test_a_loss_criterion_on_a_solved_source_is_flagged_as_saturated(source_val, selection, warned):
    st = [(0.5, 1.8, 0.3, source_val)] * 3
    df = records({"source_only": BASE, "self_training": st})
    why = da_report.saturation(df, "p", "self_training", selection)
    assert (why is not None) == warned
    lines = da_report.registration_note("self_training", selection, why)
    assert lines[0].startswith("Registered: **self_training**")
    assert any(line.startswith("Warning:") for line in lines) == warned
    if warned:
        assert f"{100 * source_val:.1f} %" in lines[2] and "da.methods" in lines[2]
    assert da_report.registration_note(None, selection, why) == []
    # label-free: what the target labels say changes nothing in the verdict
    relabelled = df.assign(target_acc=0.99, oracle_selected_acc=0.99, source_test_acc=0.99)
    assert da_report.saturation(relabelled, "p", "self_training", selection) == why


def test_the_ess_warning_looks_at_every_seed_not_the_mean():
    df = records({"source_only": BASE, "mcc": BASE})
    df["chosen_weight_ess"] = [0.2, 0.2, 0.2, 0.3, 0.3, 0.03]  # mcc: mean 0.21, one seed 3 %
    (line, _) = da_report.weight_note(df, "p")
    assert "mcc 21.0 % (lowest seed 3.0 %)" in line and "Below 5 % on a seed" in line
    df["chosen_weight_ess"] = [0.2, 0.2, 0.2, 0.3, 0.3, 0.06]
    assert "Below" not in da_report.weight_note(df, "p")[0]
