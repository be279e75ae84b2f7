"""Stage `pretrain`: greedy layer-wise pretraining vs the same net from random init (seed Q3).

For each seed: pretrain the deep encoder greedily on the unlabeled pool of training images, then
for each label fraction f fine-tune both arms — greedy init and random init — with the same
optimiser, epochs, head initialisation and selection protocol.

Label budget (issue 7). N = the labelled training-split images the stage may use (test is a
separate array and never indexed here). They are split once, per `params.seed`, into a *pool*
(unlabeled pretraining images; labelled subsets are drawn from it) and a *monitor* split. At
fraction f, the labels used to train AND to select a checkpoint are at most floor(f·N):
`pretrain.selection: last_epoch` trains on all of them for a fixed number of epochs and keeps the
last epoch; `budget_split` selects the lowest-loss epoch on a stratified part of that same subset.
The labelled subset is class-balanced (stratified), as in the semi-supervised literature; the
balancing uses the pool's labels (which classes the drawn images have), not only the f·N drawn.
The monitor (labelled, disjoint from the pool and from test) draws the per-epoch accuracy curves
behind the epoch-1 and convergence claims and selects nothing; at f = 1 (pool + monitor = N) it is
inside the budget and measures the registry gate, so the largest fraction must be 1 (with either
protocol: a partial budget's selection split already chose its checkpoint and would bias the gate).
Test accuracy is reported, never selects.

The verdicts are paired over seeds (`paired_verdict`, greedy vs random; holds if the paired
gain's 95 % t confidence interval lies above 0).
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

import numpy as np

from adaptflow.data import Prepared
from adaptflow.evaluation.verdicts import NOISE, all_of, paired_verdict
from adaptflow.methods.pretrain import LAYER_METHODS
from adaptflow.methods.pretrain.classifier import fine_tune
from adaptflow.methods.pretrain.greedy import greedy_pretrain
from adaptflow.models.stacked import DeepClassifier, StackedEncoder
from adaptflow.stages.base import (
    STAGES,
    Gate,
    StageContext,
    StageOutcome,
    StageSpec,
    claims_table,
    log_claims,
    split_fingerprint,
)
from adaptflow.stages.budget import (
    DataPlan,
    data_plan,
    epochs_to_common_level,
    gate_indices,
    label_budget,
)
from adaptflow.sweep import sweep as run_units
from adaptflow.training import seed_everything

ARMS = ("greedy", "random")
NOT_TESTED = "not tested"
SELECTION = (
    "fine-tuning checkpoint per pretrain.selection, identical for both arms: last_epoch (default) = "
    "fixed epochs, last epoch kept, no selection; budget_split = lowest loss on a stratified part "
    "of the labelled subset. Training + selection labels <= floor(f*N) at fraction f. A labelled "
    "monitor split outside the f<1 budgets only draws accuracy curves; registry gate = the "
    "registered (greedy, f=1, first seed) model's accuracy on the monitor split, inside its "
    "budget at f=1 and used by no selection; test data selects nothing"
)


PRETRAIN_MEASURED = "measured (greedy vs random; mean ± 95 % CI of the paired difference)"


def protocol(cfg) -> str:
    """The selection_protocol tag of each fine-tuning run."""
    if cfg.selection == "last_epoch":
        return f"last_epoch: {cfg.epochs} fixed epochs, last epoch kept, no checkpoint selection"
    return (
        f"budget_split: lowest loss on a stratified {cfg.select_fraction:g} of the labelled subset"
        f" (inside the budget), up to {cfg.epochs} epochs, patience {cfg.patience}"
    )


# ------------------------------------------------------------------ arms and curves
def build_arm(arm: str, pretrained: StackedEncoder, cfg, input_dim: int, n_classes: int, seed: int):
    """The deep net of one arm: the same random draw (layers, head) for both; greedy then gets a
    copy of the pretrained layers (fine-tuning one arm never changes the pretrained encoder)."""
    seed_everything(seed)
    encoder = StackedEncoder(input_dim, cfg.layers, cfg.activation)
    if arm == "greedy":
        encoder.load_state_dict(pretrained.state_dict())  # copies the tensors
    return DeepClassifier(encoder, n_classes)


def _paired_arrays(df, fraction: float, col: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-seed (greedy, random) values of `col` at `fraction`, paired by seed."""
    piv = df[df.fraction == fraction].pivot(index="seed", columns="arm", values=col).sort_index()
    return piv["greedy"].to_numpy(float), piv["random"].to_numpy(float)


def censored_epochs(g: np.ndarray, r: np.ndarray, cap: float) -> tuple[np.ndarray, np.ndarray]:
    """Not converged (NaN) -> `cap` = budget + 1, a lower bound ("not within the budget") that
    understates the converged arm's lead; both not converged -> NaN: that seed compares nothing."""
    both = np.isnan(g) & np.isnan(r)
    g, r = np.where(np.isnan(g), cap, g), np.where(np.isnan(r), cap, r)
    g[both], r[both] = np.nan, np.nan
    return g, r


def verdicts(df, cfg) -> list[tuple[str, str, str]]:
    """The seed's three claims, each decided over seeds by a paired comparison (greedy - random)."""
    fracs = sorted(df.fraction.unique())
    pct = lambda v: f"{100 * v:g}"  # noqa: E731

    init, init_v = [], []
    for f in fracs:
        g, r = _paired_arrays(df, f, "epoch1_acc")
        res = paired_verdict(g, r)
        init_v.append(res.verdict)
        init.append(
            f"{pct(f)}%: {100 * g.mean():.1f} vs {100 * r.mean():.1f}, "
            f"{res.describe('pts', 100, 1)} {res.verdict}"
        )

    small, full = fracs[0], fracs[-1]
    g, r = _paired_arrays(df, small, "test_acc")
    gain_small = paired_verdict(g, r)
    data_text = f"gain at {pct(small)}%: {gain_small.describe('pts', 100, 1)} {gain_small.verdict}"
    if len(fracs) < 2:
        data_v = NOT_TESTED
        data_text += "; needs a second label fraction"
    else:
        g_full, r_full = _paired_arrays(df, full, "test_acc")
        larger = paired_verdict(g - r, g_full - r_full)
        data_v = all_of([gain_small.verdict, larger.verdict])
        data_text += (
            f"; gain at {pct(small)}% minus gain at {pct(full)}%: "
            f"{larger.describe('pts', 100, 1)} {larger.verdict}"
        )

    conv, conv_v = [], []
    for f in fracs:
        g, r = censored_epochs(*_paired_arrays(df, f, "epochs_to_level"), cfg.epochs + 1)
        if np.isnan(g).all():  # no evidence at this fraction: "every fraction" is not shown
            conv.append(f"{pct(f)}%: neither arm leaves chance, {NOISE}")
            conv_v.append(NOISE)
            continue
        res = paired_verdict(g, r, higher_is_better=False)
        conv_v.append(res.verdict)
        conv.append(
            f"{pct(f)}%: {np.nanmean(g):.1f} vs {np.nanmean(r):.1f}, "
            f"{res.describe('epochs', 1, 1)} fewer, {res.verdict}"
        )
    return [
        (
            "better initialisation: higher monitor accuracy after fine-tuning epoch 1, at every "
            "label fraction",
            "; ".join(init),
            all_of(init_v),
        ),
        (
            f"small-data efficiency: test-accuracy gain at {pct(small)}% labels holds, and exceeds "
            f"the gain at {pct(full)}% (paired per seed)",
            data_text,
            data_v,
        ),
        (
            f"faster convergence: fewer epochs to {cfg.convergence_level:.0%} of the best monitor "
            "accuracy of either arm (same seed and fraction), at every label fraction (not "
            "reached within the budget = budget + 1)",
            "; ".join(conv),
            all_of(conv_v) if conv_v else NOT_TESTED,
        ),
    ]


def summarise(records: list[dict]):
    import pandas as pd

    df = pd.DataFrame(records)
    agg = df.groupby(["fraction", "arm"]).agg(
        n_labels=("n_labels", "first"),
        test_acc_mean=("test_acc", "mean"),
        test_acc_std=("test_acc", "std"),
        epoch1_acc=("epoch1_acc", "mean"),
        epochs_to_level=("epochs_to_level", "mean"),  # over converged seeds
        not_converged=("epochs_to_level", lambda s: int(s.isna().sum())),
        finetune_seconds=("finetune_seconds", "mean"),
    )
    return df, agg


def gains(df) -> dict[float, object]:
    """Paired test-accuracy gain (greedy - random) per fraction."""
    return {
        f: paired_verdict(*_paired_arrays(df, f, "test_acc")) for f in sorted(df.fraction.unique())
    }


def report(df, agg, claims, cfg, dataset: str, plan: DataPlan, pretrain_seconds: float) -> str:
    rows = [
        "| labels | arm | labels used (train + select) | test acc % (mean ± std) | monitor acc % "
        f"after epoch 1 | epochs to {cfg.convergence_level:.0%} of best | fine-tune s |",
        "|---|---|---|---|---|---|---|",
    ]
    for (f, arm), r in agg.iterrows():
        std = "–" if math.isnan(r.test_acc_std) else f"{100 * r.test_acc_std:.2f}"
        epochs = "n.c." if math.isnan(r.epochs_to_level) else f"{r.epochs_to_level:.1f}"
        if r.not_converged and not math.isnan(r.epochs_to_level):
            epochs += f" ({int(r.not_converged)} n.c.)"
        rows.append(
            f"| {100 * f:g}% | {arm} | {int(r.n_labels)} | {100 * r.test_acc_mean:.2f} ± {std} "
            f"| {100 * r.epoch1_acc:.2f} | {epochs} | {r.finetune_seconds:.1f} |"
        )
    gain_rows = ["| labels | test-acc gain, greedy − random (paired) | verdict |", "|---|---|---|"]
    gain_rows += [
        f"| {100 * f:g}% | {res.describe('pts', 100, 2)} | {res.verdict} |"
        for f, res in gains(df).items()
    ]
    arch = "-".join(str(d) for d in [784, *cfg.layers])
    return (
        "\n".join(
            [
                f"# pretrain: greedy layer-wise ({cfg.layer_method}) vs random init on `{dataset}`",
                "",
                f"Net {arch} ({cfg.activation}) + softmax head; {len(cfg.seeds)} seeds; fine-tuning "
                f"{cfg.epochs} epochs, Adam lr {cfg.lr}, batch {cfg.batch_size}, same head init for both arms; "
                f"pretraining {cfg.pretrain.epochs} epochs per layer on the {len(plan.pool)} unlabeled pool "
                f"images ({pretrain_seconds:.1f} s per seed).",
                "",
                f"**Protocol** (`selection_protocol`): {protocol(cfg)}. Label budget at fraction f: "
                f"training + selection labels <= floor(f·N), N = {plan.n_total} training-split images "
                f"({len(plan.pool)} pool + {len(plan.monitor)} monitor); test is never used to select. "
                f"The {len(plan.monitor)}-image labelled monitor split (disjoint from pool and test) "
                "only draws the per-epoch accuracy curves (epoch-1 accuracy, convergence) and selects "
                "nothing. The labelled subsets are class-balanced (stratified), as in the "
                "semi-supervised literature; the balancing uses the pool's labels. The registry "
                "gate is the f=1 greedy model's monitor accuracy. Verdicts: paired over seeds "
                "(greedy − random), holds if the 95 % t confidence interval of the mean gain lies "
                "above 0; one seed = not enough seeds. Convergence target: "
                f"{cfg.convergence_level:.0%} of the best monitor accuracy of either arm (same "
                "seed and fraction); not converged (n.c.) = never reached within the budget, or "
                "a curve that never leaves chance (best < 1/K + 0.1·(1 − 1/K)).",
                "",
                *rows,
                "",
                *gain_rows,
                "",
                *claims_table(claims, PRETRAIN_MEASURED),
                "",
                "Reference (full 60k MNIST, test error): deep net without pretraining 1.6-1.9 %, SAE-3 1.40 %, "
                "SDAE-3 1.28 %, DBN 1.2 % (Bengio et al. 2007; Vincent et al. 2010). Ours uses the 5,000-image subset.",
            ]
        )
        + "\n"
    )


# ------------------------------------------------------------------ the stage
@dataclass
class SeedInputs:
    """What every seed's unit reads (the same for all seeds)."""

    x_all: np.ndarray
    y_all: np.ndarray
    x_pool: np.ndarray  # unlabelled pretraining images
    monitor: tuple[np.ndarray, np.ndarray]
    x_te: np.ndarray
    y_te: np.ndarray
    budgets: dict  # (fraction, seed) -> LabelBudget
    gate_idx: np.ndarray
    gate_at: tuple[float, int]  # (fraction, seed) of the registered model
    options: object  # the layer method's validated options
    n_classes: int


@dataclass
class SeedResult:
    records: list[dict]
    curves: dict[tuple[float, str], list[float]]  # (fraction, arm) -> monitor accuracy curve
    pretrain_seconds: float
    model_uri: str | None = None  # the registered model's, from the gate's seed
    gate_acc: float = math.nan


def seed_unit(seed: int, cfg, d: SeedInputs, ctx: StageContext) -> SeedResult:
    """One sweep unit: greedy pretraining of one seed (a phase run), then every fraction x arm
    fine-tuned from it (one run each)."""
    from adaptflow.tracking import runs
    from adaptflow.tracking.models import log_torch_model

    x_all, y_all, x_pool, monitor, x_te, y_te = (
        d.x_all,
        d.y_all,
        d.x_pool,
        d.monitor,
        d.x_te,
        d.y_te,
    )
    budgets, gate_idx, (f_gate, s_gate), options = d.budgets, d.gate_idx, d.gate_at, d.options
    n_classes, input_dim = d.n_classes, int(np.prod(x_all.shape[1:]))
    out = SeedResult([], {}, math.nan)
    with runs.run(
        f"pretrain/greedy-s{seed}",
        tags={
            "adaptflow.phase": "pretrain",
            "adaptflow.kind": "phase",
            "adaptflow.seed": str(seed),
        },
    ):
        runs.log_params(
            {"layer_method": cfg.layer_method, "seed": seed, **options.model_dump(mode="json")}
        )

        def on_layer_epoch(k: int, epoch: int, m: dict[str, float]) -> None:
            runs.log_metrics({f"pretrain/layer{k + 1}_mse": m["mse"]}, step=epoch)

        t0 = time.perf_counter()
        greedy = greedy_pretrain(
            x_pool,
            cfg.layers,
            cfg.activation,
            cfg.layer_method,
            options,
            cfg.pretrain,
            ctx.device,
            seed,
            ctx.progress,
            on_layer_epoch,
        )
        out.pretrain_seconds = time.perf_counter() - t0
        runs.log_metrics(
            {f"pretrain/layer{k + 1}_seconds": s for k, s in enumerate(greedy.layer_seconds)}
            | {"pretrain/pretrain_seconds": out.pretrain_seconds}
        )
    for fraction in cfg.label_fractions:
        budget = budgets[(fraction, seed)]
        select = (x_all[budget.select], y_all[budget.select]) if len(budget.select) else None
        arm_curves = {}
        for arm in ARMS:
            net = build_arm(arm, greedy.encoder, cfg, input_dim, n_classes, seed)
            label = f"{arm}-f{fraction:g}-s{seed}"
            tags = {
                "adaptflow.arm": arm,
                "adaptflow.fraction": f"{fraction:g}",
                "adaptflow.seed": str(seed),
                "adaptflow.selection_protocol": protocol(cfg),
            }
            with runs.run(f"pretrain/{label}", tags=tags):
                runs.log_params(
                    {
                        "arm": arm,
                        "fraction": fraction,
                        "seed": seed,
                        "label_budget": budget.allowed,
                        "n_fit": len(budget.fit),
                        "n_select": len(budget.select),
                    }
                )

                def on_epoch(epoch: int, m: dict[str, float]) -> None:
                    runs.log_metrics({f"pretrain/{k}": v for k, v in m.items()}, step=epoch)

                model, history = fine_tune(
                    net,
                    x_all[budget.fit],
                    y_all[budget.fit],
                    cfg,
                    ctx.device,
                    seed,
                    ctx.progress,
                    select=select,
                    monitor=monitor,
                    on_epoch_end=on_epoch,
                    desc=label,
                )
                curve = history.series("monitor_acc")
                rec = {
                    "arm": arm,
                    "fraction": fraction,
                    "seed": seed,
                    "n_labels": len(budget.used),
                    "test_acc": model.accuracy(x_te, y_te, ctx.device),
                    "epoch1_acc": curve[0],
                    "finetune_seconds": history.seconds,
                }
                runs.log_metrics(
                    {
                        f"pretrain/{k}": v
                        for k, v in rec.items()
                        if isinstance(v, float | int)
                        and k not in ("fraction", "seed")
                        and math.isfinite(v)
                    }
                )
                if arm == "greedy" and fraction == f_gate and seed == s_gate:
                    out.gate_acc = model.accuracy(x_all[gate_idx], y_all[gate_idx], ctx.device)
                    runs.log_metrics({"pretrain/gate_val_acc": out.gate_acc})
                    out.model_uri = log_torch_model(model.net, x_all[gate_idx[:4]])
            out.records.append(rec)
            arm_curves[arm] = curve
            out.curves[(fraction, arm)] = curve
        # one target for both arms of this seed and fraction (see epochs_to_common_level)
        reached = epochs_to_common_level(arm_curves, cfg.convergence_level, n_classes)
        for rec in out.records[-len(ARMS) :]:
            r = reached[rec["arm"]]
            rec["epochs_to_level"] = math.nan if r is None else float(r)
    return out


def run(params, ctx: StageContext, data: dict[str, Prepared]) -> StageOutcome:
    from adaptflow.tracking import plots, runs

    cfg = params.pretrain
    prepared = data[cfg.dataset]
    split = prepared.split
    if split.x_train.ndim != 4:
        raise ValueError(f"pretrain.dataset {cfg.dataset!r} holds sequences, not images")
    plan = data_plan(len(split.x_train), cfg.val_fraction, cfg.max_train, params.seed)
    x_all, y_all = split.x_train, split.y_train
    x_pool = x_all[plan.pool]
    monitor = (x_all[plan.monitor], y_all[plan.monitor])
    x_te, y_te = split.x_test, split.y_test
    n_classes, input_dim = split.num_classes, int(np.prod(x_all.shape[1:]))
    options = LAYER_METHODS.get(cfg.layer_method).Config.model_validate(cfg.layer_options)
    budgets = {  # checked for every fraction before any training
        (f, s): label_budget(y_all, plan, f, s, cfg.selection, cfg.select_fraction)
        for f in cfg.label_fractions
        for s in cfg.seeds
    }
    f_gate, s_gate = cfg.label_fractions[-1], cfg.seeds[0]
    gate_idx = gate_indices(plan, budgets[(f_gate, s_gate)])
    outcome = StageOutcome(model_name=params.model_name("pretrain"))
    shared = SeedInputs(
        x_all,
        y_all,
        x_pool,
        monitor,
        x_te,
        y_te,
        budgets,
        gate_idx,
        (f_gate, s_gate),
        options,
        n_classes,
    )
    # every seed is a sweep unit (its greedy pretraining, then its fractions x arms): on
    # `runner: dask` seeds run concurrently
    results = run_units(
        [functools.partial(seed_unit, seed, cfg, shared) for seed in cfg.seeds],
        ctx,
        [f"pretrain/s{seed}" for seed in cfg.seeds],
    )
    records, curves, pretrain_seconds, gate_acc = [], {}, [], math.nan
    for unit in results:
        records += unit.records
        for key, curve in unit.curves.items():
            curves.setdefault(key, []).append(curve)
        pretrain_seconds.append(unit.pretrain_seconds)
        if unit.model_uri is not None:
            outcome.model_uri, gate_acc = unit.model_uri, unit.gate_acc
    df, agg = summarise(records)
    claims = verdicts(df, cfg)
    text = report(df, agg, claims, cfg, cfg.dataset, plan, float(np.mean(pretrain_seconds)))
    runs.log_text(text, "pretrain/verdict.md")
    log_claims("pretrain", claims, PRETRAIN_MEASURED)
    runs.log_text(df.to_csv(index=False), "pretrain/runs.csv")
    runs.log_text(agg.to_csv(), "pretrain/summary.csv")
    if ctx.parent_run_id:
        runs.log_text_to(ctx.parent_run_id, text, "pretrain/verdict.md")
    panels = {
        f"{100 * f:g}% labels": {arm: np.mean(curves[(f, arm)], axis=0).tolist() for arm in ARMS}
        for f in cfg.label_fractions
    }
    runs.log_figure(plots.curve_panels(panels), "pretrain/monitor_acc_curves.png")
    summary = {}
    for (f, arm), r in agg.iterrows():
        summary[f"pretrain/{arm}/f{f:g}/test_acc_mean"] = r.test_acc_mean
        summary[f"pretrain/{arm}/f{f:g}/test_acc_std"] = r.test_acc_std
    for f, res in gains(df).items():
        summary[f"pretrain/f{f:g}/gain"] = res.mean_diff
        summary[f"pretrain/f{f:g}/gain_se"] = res.se
    summary["pretrain/test_acc"] = agg.loc[(f_gate, "greedy"), "test_acc_mean"]
    summary["pretrain/pretrain_seconds"] = float(np.mean(pretrain_seconds))
    summary["pretrain/claims_holding"] = sum(v == "holds" for _, _, v in claims)
    summary["pretrain/gate_val_acc"] = gate_acc
    summary = {k: float(v) for k, v in summary.items() if math.isfinite(v)}  # no NaN std/SE
    runs.log_metrics(summary)
    outcome.metrics = summary
    outcome.gate_context = {
        "dataset_digest": prepared.digest,
        "input_shape": "x".join(str(d) for d in x_all.shape[1:]),
        "val_split": split_fingerprint(gate_idx),
        # the network interface: another architecture is "not comparable", never a silent swap
        "model": f"{'-'.join(map(str, [input_dim, *cfg.layers]))}-{cfg.activation}-{n_classes}",
    }
    return outcome


STAGE = STAGES.register("pretrain")(
    StageSpec(
        name="pretrain",
        datasets=lambda p: [p.pretrain.dataset],
        run=run,
        headline=("pretrain/test_acc", "pretrain/claims_holding"),
        selection=SELECTION,
        gate=Gate("pretrain/gate_val_acc", higher_is_better=True),
    )
)
