"""Stage `pretrain`: the label budget, the paired verdicts, the gate, bench isolation, the claim."""

import hashlib
import math

import numpy as np
import pandas as pd
import pytest
import torch

from adaptflow.config import MnistSource, PretrainBudget, PretrainStageConfig, build_params
from adaptflow.data import SOURCES
from adaptflow.evaluation.verdicts import FAILS, FEW_SEEDS, HOLDS, NOISE, paired_verdict
from adaptflow.methods.pretrain import LAYER_METHODS
from adaptflow.methods.pretrain.classifier import fine_tune
from adaptflow.methods.pretrain.greedy import greedy_pretrain
from adaptflow.stages import pretrain as stage
from adaptflow.stages.base import split_fingerprint
from adaptflow.stages.budget import data_plan, epochs_to_common_level, gate_indices, label_budget
from adaptflow.stages.pretrain import NOT_TESTED, build_arm, verdicts

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def mnist():
    return SOURCES.get("mnist")(MnistSource(kind="mnist"), 0)


def row_hashes(x: np.ndarray) -> set[bytes]:
    return {hashlib.sha1(r.tobytes()).digest() for r in x.reshape(len(x), -1)}


# ------------------------------------------------------------------ the label budget
@pytest.mark.parametrize("selection", ["last_epoch", "budget_split"])
def test_training_plus_selection_labels_stay_within_f_times_n_and_off_test(mnist, selection):
    plan = data_plan(len(mnist.x_train), 0.1, None, 0)
    n = plan.n_total
    assert n == len(mnist.x_train) == 4000  # N: every training-split image, test excluded
    test_rows = row_hashes(mnist.x_test)
    for f in (0.01, 0.05, 0.1, 1.0):
        b = label_budget(mnist.y_train, plan, f, 0, selection, 0.2)
        used = b.used
        assert len(used) <= math.floor(f * n + 1e-9)
        assert len(np.unique(used)) == len(used)  # fit and select are disjoint
        assert np.isin(used, plan.pool).all() and not np.isin(used, plan.monitor).any()
        assert not row_hashes(mnist.x_train[used]) & test_rows  # no test image among them
        assert (len(b.select) > 0) == (selection == "budget_split")
        if f < 1:  # a stratified draw: every class present
            assert len(np.unique(mnist.y_train[b.fit])) == 10
    # the registered model (f = 1) is gated on the monitor: inside its budget, used by no
    # training and no selection (a gate on the selection split would be biased), off test
    full = label_budget(mnist.y_train, plan, 1.0, 0, selection, 0.2)
    gate = gate_indices(plan, full)
    assert np.array_equal(gate, plan.monitor)
    assert not np.isin(gate, full.fit).any() and not np.isin(gate, full.select).any()
    assert len(full.used) + len(gate) <= n
    assert not row_hashes(mnist.x_train[gate]) & test_rows


def test_a_budget_smaller_than_the_classes_is_refused(mnist):
    plan = data_plan(len(mnist.x_train), 0.1, None, 0)
    with pytest.raises(ValueError, match="fewer than the 10 classes"):
        label_budget(mnist.y_train, plan, 0.001, 0, "last_epoch", 0.2)


@pytest.mark.parametrize("selection", ["last_epoch", "budget_split"])
def test_the_gate_never_borrows_labels_outside_a_partial_budget(mnist, selection):
    # nor reuses a partial budget's selection split (it chose the checkpoint: a biased gate)
    plan = data_plan(len(mnist.x_train), 0.1, None, 0)
    with pytest.raises(ValueError, match="registry gate"):
        gate_indices(plan, label_budget(mnist.y_train, plan, 0.1, 0, selection, 0.2))


def test_params_refuse_selection_outside_the_protocol(raw_params):
    from adaptflow.config import ParamsError

    raw = dict(raw_params)
    with pytest.raises(ParamsError, match="pretrain.patience"):
        build_params(raw, {"pretrain": {**raw["pretrain"], "patience": 3}})
    for selection in ("last_epoch", "budget_split"):
        with pytest.raises(ParamsError, match="largest fraction must be 1.0"):
            pretrain = {**raw["pretrain"], "label_fractions": [0.01, 0.1], "selection": selection}
            build_params(raw, {"pretrain": pretrain})
    p = build_params(raw, {"pretrain": {**raw["pretrain"], "selection": "budget_split"}})
    assert p.pretrain.selection == "budget_split" and p.pretrain.gate_margin == 0.01


# ------------------------------------------------------------------ verdicts
def records(values: dict[tuple[float, str], list[tuple[float, float, float]]]) -> pd.DataFrame:
    """(fraction, arm) -> per seed (test_acc, epoch1_acc, epochs_to_level)."""
    rows = []
    for (f, arm), per_seed in values.items():
        for seed, (acc, e1, ep) in enumerate(per_seed):
            rows.append(
                dict(
                    fraction=f, arm=arm, seed=seed, test_acc=acc, epoch1_acc=e1, epochs_to_level=ep
                )
            )
    return pd.DataFrame(rows)


CFG = PretrainStageConfig()


def test_verdicts_hold_when_greedy_wins_consistently_over_seeds():
    df = records(
        {
            (0.01, "greedy"): [(0.50, 0.30, 10), (0.53, 0.33, 12), (0.55, 0.31, 11)],
            (0.01, "random"): [(0.35, 0.12, 20), (0.36, 0.11, 22), (0.34, 0.13, 25)],
            (1.0, "greedy"): [(0.93, 0.80, 4), (0.94, 0.78, 4), (0.93, 0.79, 5)],
            (1.0, "random"): [(0.92, 0.45, 8), (0.92, 0.44, 8), (0.91, 0.43, 8)],
        }
    )
    claims = verdicts(df, CFG)
    assert [v for _, _, v in claims] == [HOLDS, HOLDS, HOLDS]
    assert "± " in claims[1][1] and "95 % CI, 3 seeds" in claims[1][1]


def test_one_seed_is_never_enough():
    df = records(
        {
            (0.01, "greedy"): [(0.9, 0.9, 2)],
            (0.01, "random"): [(0.1, 0.1, 20)],
            (1.0, "greedy"): [(0.9, 0.9, 2)],
            (1.0, "random"): [(0.8, 0.5, 9)],
        }
    )
    assert [v for _, _, v in verdicts(df, CFG)] == [FEW_SEEDS] * 3


def test_small_data_claim_needs_a_larger_gain_at_the_small_fraction():
    # the gain at 1 % clearly holds, but it is no larger than the gain with all labels
    df = records(
        {
            (0.01, "greedy"): [(0.50, 0.3, 5), (0.52, 0.3, 5), (0.51, 0.3, 5)],
            (0.01, "random"): [(0.40, 0.2, 9), (0.41, 0.2, 9), (0.40, 0.2, 9)],
            (1.0, "greedy"): [(0.95, 0.8, 3), (0.96, 0.8, 3), (0.97, 0.8, 3)],
            (1.0, "random"): [(0.85, 0.4, 6), (0.84, 0.4, 6), (0.86, 0.4, 6)],
        }
    )
    claim = verdicts(df, CFG)[1]
    assert "gain at 1%: +10.7" in claim[1] and claim[2] == NOISE


def test_convergence_counts_never_converging_as_slower_and_a_fraction_at_chance_is_no_evidence():
    nan = math.nan
    df = records(
        {  # at 1 % random never leaves chance; at 5 % neither arm does
            (0.01, "greedy"): [(0.5, 0.3, 3), (0.5, 0.3, 4), (0.5, 0.3, 5)],
            (0.01, "random"): [(0.1, 0.1, nan), (0.1, 0.1, nan), (0.1, 0.1, nan)],
            (0.05, "greedy"): [(0.1, 0.1, nan)] * 3,
            (0.05, "random"): [(0.1, 0.1, nan)] * 3,
            (1.0, "greedy"): [(0.9, 0.8, 4), (0.9, 0.8, 6), (0.9, 0.8, 5)],
            (1.0, "random"): [(0.9, 0.4, 10), (0.9, 0.4, 11), (0.9, 0.4, 10)],
        }
    )
    text, verdict = verdicts(df, CFG)[2][1:]
    assert verdict == NOISE  # "at every fraction" cannot hold with 5 % untested
    assert "5%: neither arm leaves chance, within noise" in text
    assert f"1%: 4.0 vs {CFG.epochs + 1:.1f}" in text  # not converged = budget + 1 epochs
    assert text.count("fewer, holds") == 2  # the tested fractions (1 %, 100 %) hold


def test_an_arm_stalling_low_does_not_win_the_convergence_claim():
    """Random plateaus at 40 % by epoch 3, greedy climbs to 85 % by epoch 12 (every seed and
    fraction): with each arm's own best as target random 'converged' first; the common target
    (level x the better arm's best) makes greedy the faster arm."""
    cfg = PretrainStageConfig(epochs=15)
    rows = []
    for seed in range(3):
        random = [0.2, 0.35, 0.4 + 0.001 * seed] + [0.4] * 12
        greedy = [0.3 + 0.05 * i for i in range(11)] + [0.85 + 0.01 * seed] * 4
        reached = epochs_to_common_level({"greedy": greedy, "random": random}, 0.95, 10)
        for f in (0.01, 1.0):
            for arm, curve in (("greedy", greedy), ("random", random)):
                ep = math.nan if reached[arm] is None else float(reached[arm])
                acc = curve[-1]
                rows.append(
                    dict(
                        fraction=f,
                        arm=arm,
                        seed=seed,
                        test_acc=acc,
                        epoch1_acc=curve[0],
                        epochs_to_level=ep,
                    )
                )
    text, verdict = verdicts(pd.DataFrame(rows), cfg)[2][1:]
    assert verdict == HOLDS, text
    assert "1%: 12.0 vs 16.0" in text  # random never reaches 0.95 x 85 %: budget + 1


def test_convergence_fails_when_greedy_is_slower():
    df = records(
        {
            (0.01, "greedy"): [(0.5, 0.3, 20), (0.5, 0.3, 22), (0.5, 0.3, 21)],
            (0.01, "random"): [(0.4, 0.2, 10), (0.4, 0.2, 11), (0.4, 0.2, 12)],
            (1.0, "greedy"): [(0.9, 0.8, 4), (0.9, 0.8, 6), (0.9, 0.8, 5)],
            (1.0, "random"): [(0.9, 0.4, 9), (0.9, 0.4, 8), (0.9, 0.4, 10)],
        }
    )
    assert verdicts(df, CFG)[2][2] == FAILS


def test_one_label_fraction_cannot_test_small_data_efficiency():
    df = records(
        {
            (1.0, "greedy"): [(0.9, 0.8, 4), (0.92, 0.8, 6)],
            (1.0, "random"): [(0.8, 0.4, 9), (0.81, 0.4, 8)],
        }
    )
    assert verdicts(df, CFG)[1][2] == NOT_TESTED


# ------------------------------------------------------------------ the stage, end to end
@pytest.mark.parametrize("selection", ["last_epoch", "budget_split"])
def test_stage_run_respects_the_budget_and_fills_the_gate(mnist, project, monkeypatch, selection):
    import mlflow
    from mlflow.tracking import MlflowClient

    from adaptflow.data.prepare import Prepared
    from adaptflow.stages.base import StageContext
    from adaptflow.tracking import runs
    from adaptflow.tracking.store import configure

    params = build_params(
        __import__("yaml").safe_load(open("params.yaml")),
        {"profile": "smoke"},
    )
    params = params.model_copy(
        update={
            "pretrain": params.pretrain.model_copy(
                update={
                    "max_train": 200,
                    "layers": [16],
                    "label_fractions": [0.1, 1.0],
                    "selection": selection,
                }
            )
        }
    )
    cfg = params.pretrain
    prepared = Prepared("mnist", project / "mnist.npz", {"md5": "d1g"}, mnist)
    plan = data_plan(len(mnist.x_train), cfg.val_fraction, cfg.max_train, params.seed)
    test_rows, monitor_rows = row_hashes(mnist.x_test), row_hashes(mnist.x_train[plan.monitor])
    fed = []

    def recording_fine_tune(net, x, y, settings, device, seed, progress=False, **kw):
        sel = kw.get("select")
        fed.append((x, None if sel is None else sel[0]))
        return fine_tune(net, x, y, settings, device, seed, progress, **kw)

    monkeypatch.setattr(stage, "fine_tune", recording_fine_tune)
    exp_id = configure(".", "test-pretrain")
    ctx = StageContext(project, exp_id, CPU, progress=False)
    with runs.run("pretrain", experiment_id=exp_id) as active:
        outcome = stage.run(params, ctx, {"mnist": prepared})

    # every fine-tuning run: training + selection labels within floor(f*N), none from test/monitor
    assert len(fed) == len(cfg.seeds) * 2 * 2
    fractions = [f for _ in cfg.seeds for f in cfg.label_fractions for _ in range(2)]
    for f, (x_fit, x_sel) in zip(fractions, fed, strict=True):
        touched = x_fit if x_sel is None else np.concatenate([x_fit, x_sel])
        assert len(touched) <= math.floor(f * plan.n_total + 1e-9)
        assert not row_hashes(touched) & (test_rows | monitor_rows)

    client = MlflowClient()
    children = client.search_runs([exp_id], f"tags.`mlflow.parentRunId` = '{active.info.run_id}'")
    tuned = [r for r in children if "adaptflow.arm" in r.data.tags]
    assert len(tuned) == 8
    assert {r.data.tags["adaptflow.selection_protocol"] for r in tuned} == {stage.protocol(cfg)}
    assert stage.protocol(cfg).startswith(selection)
    assert any(x_sel is not None for _, x_sel in fed) == (selection == "budget_split")

    # the gate: the logged model's accuracy on the in-budget monitor split, never on test
    gate = stage.STAGE.gate
    assert gate.metric == "pretrain/gate_val_acc" and gate.higher_is_better
    model = mlflow.pytorch.load_model(outcome.model_uri)
    with torch.no_grad():
        pred = model(torch.from_numpy(mnist.x_train[plan.monitor])).argmax(1).numpy()
    acc = float((pred == mnist.y_train[plan.monitor]).mean())
    assert outcome.metrics[gate.metric] == pytest.approx(acc)
    assert outcome.gate_context == {
        "dataset_digest": "d1g",
        "input_shape": "1x28x28",
        "val_split": split_fingerprint(plan.monitor),
        "model": "784-16-sigmoid-10",
    }
    assert client.search_registered_models() == []  # run() registers nothing itself
    verdict = mlflow.artifacts.load_text(f"runs:/{active.info.run_id}/pretrain/verdict.md")
    assert selection in verdict and "95 % t confidence interval" in verdict


def test_bench_never_uses_production_names(project):
    from bench.common import bench_params

    p = bench_params("params.yaml", ["registry_prefix=adaptflow", "experiment=adaptflow"])
    assert p.model_name("pretrain") == "adaptflow-bench-pretrain"
    assert p.experiment == "adaptflow-bench"
    smoke = bench_params("params.yaml", ["profile=smoke"])
    assert smoke.model_name("pretrain") == "adaptflow-bench-pretrain"


@pytest.mark.parametrize(
    "name", ["ae_sweep", "pretrain_sweep", "transfer_sweep", "da_sweep", "gan_sweep", "seq_sweep"]
)
def test_every_bench_imports_and_parses_its_command_line(name, project):
    import importlib

    bench = importlib.import_module(f"bench.{name}")
    with pytest.raises(SystemExit) as exc:  # --help: parse, print, exit 0; nothing runs
        bench.main(["--help"])
    assert exc.value.code == 0


def test_bench_da_pairs_option_keeps_only_the_named_pairs(project):
    from bench.common import bench_params
    from bench.da_sweep import _only_pairs

    p = bench_params("params.yaml", ["profile=bench"])
    kept, suffix = _only_pairs(p, "usps2mnist, syn2mnist")
    assert list(kept.da.pairs) == ["syn2mnist", "usps2mnist"]  # the profile's order
    assert suffix == "-syn2mnist-usps2mnist"
    assert kept.da.pairs["syn2mnist"] == p.da.pairs["syn2mnist"]
    with pytest.raises(SystemExit, match="nope not in da.pairs of profile 'bench'"):
        _only_pairs(p, "syn2mnist,nope")


# ------------------------------------------------------------------ the seed's claim (slow)
@pytest.mark.slow
def test_greedy_pretraining_helps_with_few_labels(mnist, raw_params):
    """5 % labels, honest protocol (last_epoch: fixed epochs, no selection), paired over 3 seeds."""
    cfg = build_params(raw_params, {}).pretrain  # the default profile's budget
    plan = data_plan(len(mnist.x_train), cfg.val_fraction, None, 0)
    acc = {"greedy": [], "random": []}
    for seed in (0, 1, 2):
        greedy = greedy_pretrain(
            mnist.x_train[plan.pool],
            cfg.layers,
            cfg.activation,
            "ae",
            LAYER_METHODS.get("ae").Config(),
            PretrainBudget(epochs=20),
            CPU,
            seed,
        )
        b = label_budget(mnist.y_train, plan, 0.05, seed, "last_epoch", cfg.select_fraction)
        assert len(b.select) == 0 and len(b.fit) == 200
        for arm in acc:
            net = build_arm(arm, greedy.encoder, cfg, 784, 10, seed)
            model, _ = fine_tune(net, mnist.x_train[b.fit], mnist.y_train[b.fit], cfg, CPU, seed)
            acc[arm].append(model.accuracy(mnist.x_test, mnist.y_test, CPU))
    res = paired_verdict(acc["greedy"], acc["random"])
    assert res.verdict == HOLDS and res.mean_diff > 0.05, (acc, res)
