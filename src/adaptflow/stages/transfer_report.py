"""The `finetune` stage's measurements turned into the seed's comparison, plots and verdicts.

Per run record: backbone, arm, fraction, seed, test accuracy, wall time to train, time per
epoch, trainable parameters, and the monitor accuracy curve with cumulative epoch times. Every
claim is a paired comparison over seeds (`paired_verdict`), per backbone, able to fail.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from adaptflow.evaluation.verdicts import FAILS, FEW_SEEDS, NOISE, all_of, paired_verdict
from adaptflow.stages.base import PAIRED, claims_table, log_claims
from adaptflow.stages.budget import chance_threshold, epochs_to_reach

SCALARS = (
    "test_acc",
    "train_seconds",
    "epoch_seconds",
    "epochs",
    "trainable_params",
    "epochs_to_own95",
    "seconds_to_target",
)


def pct(f: float) -> str:
    return f"{100 * f:g}%"


def add_convergence(records: list[dict], level: float, n_classes: int) -> pd.DataFrame:
    """One row per run with its convergence numbers:
    - epochs_to_own95: first epoch at `level` x its OWN best monitor accuracy (what the issue
      logs per arm; NaN when the curve never leaves chance);
    - seconds_to_target: wall time until the monitor accuracy first reaches `level` x the best
      of finetune and scratch for that backbone, fraction and seed (a common target: an arm
      stalling low never "converges" to its own low best); NaN = not reached within the budget.
    """
    rows = [dict(r) for r in records]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["backbone"], r["fraction"], r["seed"]), []).append(r)
    for group in groups.values():
        pair = [r for r in group if r["arm"] in ("finetune", "scratch")]
        target = level * max((max(r["curve"]) for r in pair), default=math.nan)
        for r in group:
            own = epochs_to_reach(r["curve"], level * max(r["curve"]), n_classes)
            r["epochs_to_own95"] = math.nan if own is None else float(own)
            hit = epochs_to_reach(r["curve"], target, n_classes) if pair else None
            r["seconds_to_target"] = math.nan if hit is None else r["epoch_times"][hit - 1]
            r["censor_seconds"] = r["epoch_times"][-1]
    return pd.DataFrame(rows)


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (backbone, arm, fraction)."""
    g = df.groupby(["backbone", "arm", "fraction"])
    agg = g[list(SCALARS)].mean()
    agg["test_acc_std"] = g["test_acc"].std()
    agg["n_labels"] = g["n_labels"].first()
    agg["not_reached"] = g["seconds_to_target"].apply(lambda s: int(s.isna().sum()))
    return agg


def paired(df: pd.DataFrame, backbone: str, arm: str, fraction: float, col: str) -> np.ndarray:
    """`col` of one arm, ordered by seed (seeds pair the arms: same subset, same head draw)."""
    sel = df[(df.backbone == backbone) & (df.arm == arm) & (df.fraction == fraction)]
    return sel.sort_values("seed")[col].to_numpy(dtype=float)


def crossing(df: pd.DataFrame, backbone: str, fracs: list[float]) -> str:
    """Where the mean test-accuracy curves of feature extraction and fine-tuning cross (linear
    in log f between the swept fractions), or that they do not."""
    d = [
        paired(df, backbone, "features", f, "test_acc").mean()
        - paired(df, backbone, "finetune", f, "test_acc").mean()
        for f in fracs
    ]
    points = list(zip(fracs, d, strict=True))
    for (f0, d0), (f1, d1) in zip(points, points[1:], strict=False):
        if d0 == 0:
            return f"equal at {pct(f0)}"
        if d0 * d1 < 0:
            t = d0 / (d0 - d1)
            at = math.exp(math.log(f0) + t * (math.log(f1) - math.log(f0)))
            first = "feature extraction" if d0 > 0 else "fine-tuning"
            return (
                f"{first} ahead below, cross between {pct(f0)} and {pct(f1)} (≈{pct(round(at, 4))})"
            )
    leader = "feature extraction" if d[-1] > 0 else "fine-tuning"
    return f"no crossing in {pct(fracs[0])}–{pct(fracs[-1])}: {leader} ahead at every fraction"


def verdicts(df: pd.DataFrame, fracs: list[float], level: float) -> list[tuple[str, str, str]]:
    """The seed's claims (Q4: transfer vs scratch; Q5: feature extraction vs fine-tuning), per
    backbone, each decided over seeds by a paired comparison; every one can fail."""
    claims = []
    for bb in sorted(df.backbone.unique()):
        # Q4 better accuracy: finetune beats scratch at every fraction
        parts, vs = [], []
        for f in fracs:
            res = paired_verdict(
                paired(df, bb, "finetune", f, "test_acc"), paired(df, bb, "scratch", f, "test_acc")
            )
            vs.append(res.verdict)
            parts.append(f"{pct(f)}: {res.describe('pts', 100, 1)} {res.verdict}")
        claims.append(
            (
                f"[{bb}] transfer gives better accuracy: fine-tuned test accuracy above scratch "
                "at every label fraction",
                "; ".join(parts),
                all_of(vs),
            )
        )
        # Q4 less data: finetune with f_k labels beats scratch with the next, larger f_{k+1}
        parts, vs = [], []
        for f_small, f_big in zip(fracs, fracs[1:], strict=False):
            res = paired_verdict(
                paired(df, bb, "finetune", f_small, "test_acc"),
                paired(df, bb, "scratch", f_big, "test_acc"),
            )
            vs.append(res.verdict)
            parts.append(
                f"finetune@{pct(f_small)} − scratch@{pct(f_big)}: "
                f"{res.describe('pts', 100, 1)} {res.verdict}"
            )
        claims.append(
            (
                f"[{bb}] transfer needs less data: fine-tuning on each label budget beats scratch "
                "on the next larger one",
                "; ".join(parts) or "one fraction: nothing to compare",
                all_of(vs) if vs else FEW_SEEDS,
            )
        )
        # Q4 less training time: wall time to a common monitor-accuracy target, at f = 1
        f = fracs[-1]
        claims.append(time_claim(df, bb, f, level))
        # Q5: feature extraction wins with little data, fine-tuning with more
        small, big = fracs[0], fracs[-1]
        fe_small = paired_verdict(
            paired(df, bb, "features", small, "test_acc"),
            paired(df, bb, "finetune", small, "test_acc"),
        )
        ft_big = paired_verdict(
            paired(df, bb, "finetune", big, "test_acc"),
            paired(df, bb, "features", big, "test_acc"),
        )
        claims.append(
            (
                f"[{bb}] feature extraction wins with little target data ({pct(small)} labels)",
                f"features − finetune: {fe_small.describe('pts', 100, 1)} {fe_small.verdict}; "
                f"{crossing(df, bb, fracs)}",
                fe_small.verdict,
            )
        )
        claims.append(
            (
                f"[{bb}] fine-tuning wins with more target data ({pct(big)} labels)",
                f"finetune − features: {ft_big.describe('pts', 100, 1)} {ft_big.verdict}",
                ft_big.verdict if len(fracs) > 1 else NOISE,
            )
        )
    return claims


def time_claim(df, bb: str, f: float, level: float) -> tuple[str, str, str]:
    """Fine-tuning reaches the common target sooner than scratch (paired seconds). A scratch run
    that never reaches it counts its whole run time (a lower bound: conservative for the claim);
    a fine-tuning run that never reaches it makes the claim fail on that seed (its true time is
    unknown and could be anything above its run time), and so does no evidence at all."""
    ft = paired(df, bb, "finetune", f, "seconds_to_target")
    sc = paired(df, bb, "scratch", f, "seconds_to_target")
    text = (
        f"[{bb}] transfer needs less training time: seconds until the monitor accuracy reaches "
        f"{level:.0%} of the best of fine-tuning and scratch, at {pct(f)} labels (source "
        "pretraining not counted; scratch not reaching it = its whole run, a lower bound)"
    )
    stalled = np.isnan(ft)
    if len(ft) < 2:
        return text, f"{len(ft)} seed", FEW_SEEDS
    if stalled.any():
        where = f"fine-tuning never reached the target on {int(stalled.sum())} of {len(ft)} seeds"
        return text, where, FAILS if (stalled & ~np.isnan(sc)).any() else NOISE
    sc = _censored(df, bb, "scratch", f)
    res = paired_verdict(ft, sc, higher_is_better=False)
    measured = (
        f"{np.mean(ft):.1f} s vs {np.mean(sc):.1f} s "
        f"({int(np.isnan(paired(df, bb, 'scratch', f, 'seconds_to_target')).sum())} scratch "
        f"runs not reaching it), {res.describe('s', 1, 1)} less, {res.verdict}"
    )
    return text, measured, res.verdict


def _censored(df, bb: str, arm: str, f: float) -> np.ndarray:
    """seconds_to_target with 'not reached' replaced by the run's whole time (a lower bound)."""
    sec = paired(df, bb, arm, f, "seconds_to_target")
    cap = paired(df, bb, arm, f, "censor_seconds")
    return np.where(np.isnan(sec), cap, sec)


def seed_table(agg: pd.DataFrame, fracs: list[float]) -> list[str]:
    """The seed's "feature extraction vs fine-tuning" table, with measured numbers (+ scratch)."""
    small, big = fracs[0], fracs[-1]
    aspects = [  # (row, fraction, column, scale, format)
        ("trainable parameters (k)", big, "trainable_params", 1e-3, ".1f"),
        (f"training time at {pct(big)} labels (s)", big, "train_seconds", 1, ".1f"),
        ("time per epoch (s)", big, "epoch_seconds", 1, ".2f"),
        (f"test accuracy, {pct(small)} labels (%)", small, "test_acc", 100, ".1f"),
        (f"test accuracy, {pct(big)} labels (%)", big, "test_acc", 100, ".1f"),
    ]
    lines = [
        "| aspect (seed Q5) | backbone | feature extraction | fine-tuning | scratch |",
        "|---|---|---|---|---|",
    ]
    for bb in sorted({i[0] for i in agg.index}):
        for aspect, f, col, scale, fmt in aspects:
            cells = [
                format(scale * agg.loc[(bb, arm, f), col], fmt)
                for arm in ("features", "finetune", "scratch")
            ]
            lines.append(f"| {aspect} | {bb} | " + " | ".join(cells) + " |")
    return lines


def arm_table(agg: pd.DataFrame) -> list[str]:
    lines = [
        "| backbone | arm | labels | test acc % (mean ± std) | train s | s/epoch | epochs | "
        "trainable | epochs to 95 % of own best | s to common target (n.r.) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (bb, arm, f), r in agg.iterrows():
        std = "–" if math.isnan(r.test_acc_std) else f"{100 * r.test_acc_std:.1f}"
        own = "n.c." if math.isnan(r.epochs_to_own95) else f"{r.epochs_to_own95:.1f}"
        tgt = "n.r." if math.isnan(r.seconds_to_target) else f"{r.seconds_to_target:.2f}"
        if r.not_reached and not math.isnan(r.seconds_to_target):
            tgt += f" ({int(r.not_reached)} n.r.)"
        lines.append(
            f"| {bb} | {arm} | {int(r.n_labels)} ({pct(f)}) | {100 * r.test_acc:.1f} ± {std} | "
            f"{r.train_seconds:.1f} | {r.epoch_seconds:.2f} | {r.epochs:.0f} | "
            f"{r.trainable_params / 1e3:.1f} k | {own} | {tgt} |"
        )
    return lines


def publish(
    records: list[dict], params, plan, ctx, n_test: int, n_classes: int
) -> dict[str, float]:
    """Report, tables, plots and verdicts as artifacts; returns the summary metrics."""
    from adaptflow.tracking import runs

    sweep, cfg = params.transfer, params.finetune
    fracs = list(sweep.label_fractions)
    df = add_convergence(records, sweep.convergence_level, n_classes)
    agg = summarise(df)
    claims = verdicts(df, fracs, sweep.convergence_level)
    flat = df.drop(columns=["curve", "epoch_times"])
    runs.log_text(flat.to_csv(index=False), "finetune/runs.csv")
    runs.log_text(agg.to_csv(), "finetune/summary.csv")
    log_claims("finetune", claims, PAIRED)
    text = "\n".join(
        [
            f"# Transfer learning on `{sweep.target}`: feature extraction vs fine-tuning vs scratch",
            "",
            f"Backbones {', '.join(f'{k} ({v.arch})' for k, v in sweep.backbones.items())} "
            f"pretrained by the `source` stage; {len(sweep.seeds)} seeds; test on {n_test} images. "
            f"finetune: `unfreeze: {cfg.unfreeze}` (blocks from the top; all = every layer), "
            f"layer decay {cfg.layer_decay}, AdamW lr "
            f"{cfg.lr:g}, warm-up {cfg.warmup_steps} steps + cosine, {cfg.epochs} epochs "
            f"(at least {cfg.min_steps} steps), batch {cfg.batch_size}; scratch: the same "
            "architecture from random init, the same epochs/steps/schedule, uniform lr; "
            "features: a linear head on the frozen backbone's features "
            f"({params.features.head_epochs} epochs or {cfg.min_steps} steps, Adam lr "
            f"{params.features.head_lr:g}; its time includes embedding its training images).",
            "",
            f"**Protocol** (`selection_protocol`): at fraction f every arm trains on the same "
            f"stratified floor(f·N) labels, N = {plan.n_total} training-split images "
            f"({len(plan.pool)} pool + {len(plan.monitor)} monitor), for a fixed budget; no "
            "labels select anything below f = 1. The labelled monitor split draws the accuracy "
            "curves (convergence, time to target): below f = 1 these are labels outside the "
            "budget, used to measure only (never to train or select), so the convergence numbers "
            "there are measurements a budget-limited user could not make; at f = 1 (inside that "
            "budget) its first half "
            "picks the registered arm per backbone and its second half measures the registry "
            "gate. Test data selects nothing. Verdicts: paired over seeds, holds if the 95 % t "
            "confidence interval of the mean paired difference lies beyond 0; one seed = not "
            f"enough seeds. n.c. = never leaves chance (< {chance_threshold(n_classes):.2f}); "
            "n.r. = common target not reached within the budget.",
            "",
            *seed_table(agg, fracs),
            "",
            *arm_table(agg),
            "",
            *claims_table(claims, PAIRED),
            "",
        ]
    )
    runs.log_text(text, "finetune/report.md")
    if ctx.parent_run_id:
        runs.log_text_to(ctx.parent_run_id, text, "finetune/report.md")
    runs.log_figure(accuracy_vs_labels(agg), "finetune/accuracy_vs_labels.png")
    runs.log_figure(accuracy_vs_time(agg), "finetune/accuracy_vs_time.png")
    summary = {
        f"finetune/{bb}/{arm}/f{f:g}/test_acc_mean": r.test_acc
        for (bb, arm, f), r in agg.iterrows()
    }
    summary |= {  # the seed spread beside each mean (adaptflow compare sets moves against it)
        f"finetune/{bb}/{arm}/f{f:g}/test_acc_std": r.test_acc_std
        for (bb, arm, f), r in agg.iterrows()
    }
    summary |= {
        f"finetune/{bb}/{arm}/f{f:g}/train_seconds": r.train_seconds
        for (bb, arm, f), r in agg.iterrows()
    }
    summary["finetune/claims_holding"] = sum(v == "holds" for _, _, v in claims)
    summary["finetune/claims"] = len(claims)
    return summary


def accuracy_vs_labels(agg: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for (bb, arm), g in agg.groupby(level=[0, 1]):
        f = g.index.get_level_values(2)
        ax.errorbar(
            f,
            100 * g.test_acc,
            yerr=100 * g.test_acc_std.fillna(0),
            marker="o",
            ms=3,
            capsize=2,
            label=f"{bb} {arm}",
            ls={"features": ":", "finetune": "-", "scratch": "--"}[arm],
        )
    ax.set_xscale("log")
    ax.set_xlabel("target labels (fraction of the training split)")
    ax.set_ylabel("test accuracy % (mean ± std over seeds)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def accuracy_vs_time(agg: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for (bb, arm), g in agg.groupby(level=[0, 1]):
        ax.plot(g.train_seconds, 100 * g.test_acc, marker="o", ms=4, label=f"{bb} {arm}")
        for f, x, y in zip(g.index.get_level_values(2), g.train_seconds, g.test_acc, strict=True):
            ax.annotate(pct(f), (x, 100 * y), fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel("wall time to train (s, log)")
    ax.set_ylabel("test accuracy %")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
