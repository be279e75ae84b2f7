"""Stage `da`: domain adaptation (seed Q6) — labelled source, unlabelled target, one task.

For every pair of `da.pairs`, method of `da.methods` and seed, one nested run trains the method
for `da.steps` steps (a source batch + a target batch each) and keeps `da.checkpoints` evenly
spaced candidate checkpoints; with a hyper-parameter grid (`da.grid`), every grid point is a run
of its own and its checkpoints join the candidates. The candidate is chosen by the unsupervised
criterion `da.selection` (DEV, IWCV, SND, entropy or source validation accuracy), measured on the
*pick* half of the selection data: source validation images (source labels are free) and
unlabelled target images. Target labels select nothing: they are read only to score the chosen
model (and, apart, by `target_oracle`, the upper bound). Beside each result the stage reports
the accuracy an oracle would have picked among the same candidates, so users see the cost of
selecting without labels.

Per pair the method to register is the one with the best mean criterion over seeds (pick half);
its registry gate is the criterion measured on the *gate* half, never the data that chose it.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from adaptflow.config import grid_points
from adaptflow.data import DataError, Prepared
from adaptflow.stages.base import (
    STAGES,
    Gate,
    LabelledModel,
    StageContext,
    StageOutcome,
    StageSpec,
    split_fingerprint,
)
from adaptflow.sweep import sweep
from adaptflow.training import seed_everything

BASELINE, ORACLE = "source_only", "target_oracle"
GAP_POINTS = 500  # per domain for PAD and MMD² of a run's features (their O(n²) cost is per run)
log = logging.getLogger(__name__)


def selection_protocol(criterion: str) -> str:
    return (
        f"unsupervised: checkpoint and grid point by `{criterion}` on the pick half of (source "
        "validation, unlabelled target); registered method by its mean over seeds on the pick "
        "half, gate on the gate half; target labels select nothing (the oracle-selected "
        "accuracy is reported beside, apart); test data selects nothing"
    )


def datasets(params) -> list[str]:
    names: list[str] = []
    for pc in params.da.pairs.values():
        names += [n for n in (pc.source, pc.target) if n not in names]
    return names


# ---------------------------------------------------------------- data of one pair
@dataclass
class PairData:
    """One pair's arrays by role. Target labels live only in `y_te` (scoring) and `y_pool`
    (the oracle's training labels); nothing that selects receives them."""

    label: str
    x_s: np.ndarray  # source training
    y_s: np.ndarray
    x_sv: np.ndarray  # source validation (labels free: the selection data's source side)
    y_sv: np.ndarray
    x_st: np.ndarray  # source test (reported)
    y_st: np.ndarray
    x_t: np.ndarray  # unlabelled target pool (training and selection)
    y_pool: np.ndarray  # its labels: target_oracle's training only
    x_te: np.ndarray  # the scored target set (split: its test split; transductive: the pool)
    y_te: np.ndarray
    pick: tuple[np.ndarray, np.ndarray]  # (source val idx, target pool idx): chooses
    gate: tuple[np.ndarray, np.ndarray]  # disjoint halves: the registry gate
    t_train: np.ndarray  # pool indices the methods train on: the gate's target half left out
    oracle_train: np.ndarray  # pool indices whose labels target_oracle trains on
    oracle_scored: np.ndarray | None  # transductive: x_te rows it is scored on (not trained on)
    n_classes: int
    input_shape: tuple[int, ...]
    layout: str
    protocol: str
    steps: int  # optimizer steps per run
    meta: dict = field(default_factory=dict)
    target_stats: tuple | None = None  # the z-scoring of target inputs (served models apply it)

    def scored(self, uses_target_labels: bool) -> tuple[np.ndarray, np.ndarray]:
        """The target examples a method is scored on (the oracle: never ones it trained on)."""
        if uses_target_labels and self.oracle_scored is not None:
            return self.x_te[self.oracle_scored], self.y_te[self.oracle_scored]
        return self.x_te, self.y_te

    def summary(self) -> dict:
        """What the report needs of a pair (not its arrays)."""
        return {
            "protocol": self.protocol,
            "steps": self.steps,
            "n_source": len(self.x_s),
            "n_target": len(self.x_t),
            "n_target_train": len(self.t_train),
            "n_scored": len(self.x_te),
            "n_classes": self.n_classes,
            "input_shape": self.input_shape,
            "preprocessing": self.meta["preprocessing"],
        }


def _halves(n: int, cap: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.random.default_rng(seed).permutation(n)[: 2 * cap]
    half = len(idx) // 2
    return np.sort(idx[:half]), np.sort(idx[half:])


def _first(n: int, cap: int | None, seed: int) -> np.ndarray:
    """A seeded subset of `cap` of n indices (sorted), all when cap is None: test files are
    often sorted by class, so their first rows are no sample."""
    if cap is None or cap >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:cap])


def pair_data(label: str, pc, cfg, source: Prepared, target: Prepared, seed: int) -> PairData:
    from adaptflow.data.pairs import DomainPair
    from adaptflow.stages.base import split_train_val

    pair = DomainPair.build(source.split, target.split, side=pc.side, standardize=pc.standardize)
    s, t = pair.source, pair.target
    tr, val = split_train_val(len(s.x_train), cfg.val_fraction, cfg.max_train, seed)
    st = _first(len(s.x_test), cfg.max_test, seed + 13)
    if pc.protocol == "transductive":  # the unlabelled target set is what gets scored
        x_pool = np.concatenate([t.x_train, t.x_test])
        y_pool = np.concatenate([t.y_train, t.y_test])
    else:
        x_pool, y_pool = t.x_train, t.y_train
    if cfg.max_target is not None and len(x_pool) > cfg.max_target:
        keep = np.sort(np.random.default_rng(seed + 11).permutation(len(x_pool))[: cfg.max_target])
        x_pool, y_pool = x_pool[keep], y_pool[keep]
    if pc.protocol == "transductive":
        x_te, y_te = x_pool, y_pool
    else:
        te = _first(len(t.x_test), cfg.max_test, seed + 17)
        x_te, y_te = t.x_test[te], t.y_test[te]
    cap = max(1, cfg.select_points // 2)
    sv_pick, sv_gate = _halves(len(val), cap, seed + 101)
    t_pick, t_gate = _halves(len(x_pool), cap, seed + 103)
    if min(len(sv_pick), len(sv_gate), len(t_pick), len(t_gate)) < 5:
        raise DataError(
            f"da pair {label!r}: too few source validation ({len(val)}) or target ({len(x_pool)})"
            " examples to select and gate; raise da.val_fraction or use more data"
        )
    t_train = np.setdiff1d(np.arange(len(x_pool)), t_gate)  # the gate scores unseen targets
    if pc.protocol == "transductive":  # the oracle trains on half the labels, scored on the rest
        perm = np.random.default_rng(seed + 107).permutation(t_train)
        oracle_train = np.sort(perm[: len(perm) // 2])
        oracle_scored = np.setdiff1d(np.arange(len(x_pool)), oracle_train)
    else:
        oracle_train, oracle_scored = t_train, None
    return PairData(
        label,
        s.x_train[tr],
        s.y_train[tr],
        s.x_train[val],
        s.y_train[val],
        s.x_test[st],
        s.y_test[st],
        x_pool,
        y_pool,
        x_te,
        y_te,
        (sv_pick, t_pick),
        (sv_gate, t_gate),
        t_train,
        oracle_train,
        oracle_scored,
        pair.num_classes,
        pair.input_shape,
        pair.layout,
        pc.protocol,
        pc.steps or cfg.steps,
        {"classes": list(map(str, pair.classes)), "preprocessing": pair.preprocessing},
        pair.target_stats,
    )


# ---------------------------------------------------------------- networks
def build_featurizer(cfg, params, input_shape: tuple[int, ...]) -> torch.nn.Module:
    """`da.featurizer`: auto (LeNet for images, MLP for vectors), lenet, mlp, or a timm backbone
    of `transfer.backbones` (random init)."""
    from adaptflow.models import featurizers

    name = cfg.featurizer
    if name == "auto":
        return featurizers.build_featurizer(input_shape, cfg.feature_dim)
    if name == "mlp":
        return featurizers.MLPFeaturizer(int(np.prod(input_shape)), dim=cfg.feature_dim)
    if name == "lenet":
        if len(input_shape) != 3:
            raise DataError(f"da.featurizer lenet needs images, the pair gives {input_shape}")
        return featurizers.build_featurizer(input_shape, cfg.feature_dim)
    if name in params.transfer.backbones:
        if len(input_shape) != 3:
            raise DataError(f"da.featurizer {name} (timm) needs images, not {input_shape}")
        if cfg.init == "source":
            net = source_backbone(params, name)
        else:
            from adaptflow.stages.source import new_backbone

            net = new_backbone(params.transfer.backbones[name], 0, in_chans=input_shape[0])
        return featurizers.TimmFeaturizer(net)
    raise DataError(
        f"da.featurizer {name!r}: use auto, lenet, mlp or a transfer.backbones label "
        f"({', '.join(params.transfer.backbones)})"
    )


def source_model_uri(params, label: str) -> tuple[str, str]:
    """(version, URI) of the `source` stage's champion for backbone `label`; a clear error when
    there is none."""
    from adaptflow.tracking.models import registered_champions

    name = params.model_name("source")
    found = registered_champions(name)
    if label not in found:
        raise DataError(
            f"da.init: source needs {name}@champion-{label}, which is not registered: run the "
            "source stage first (`adaptflow run --stage source`) or set da.init: random"
        )
    return found[label]


def source_backbone(params, label: str) -> torch.nn.Module:
    from adaptflow.tracking.models import load_torch_model

    _, uri = source_model_uri(params, label)
    net = copy.deepcopy(load_torch_model(uri, f"source model of backbone {label!r}"))
    net.reset_classifier(0)
    return net.train()


def fingerprint(params) -> dict[str, str]:
    """The source model a timm featurizer starts from (init: source) enters the cache key."""
    cfg = params.da
    if cfg.init != "source":
        return {}
    return {"source_model": source_model_uri(params, cfg.featurizer)[1]}


def new_method(name: str, cfg, params, pd: PairData, point: dict):
    from adaptflow.methods.da import DA_METHODS

    cls = DA_METHODS.get(name)
    config = cls.Config(**(cfg.options.get(name, {}) | point))
    featurizer = build_featurizer(cfg, params, pd.input_shape)
    total = steps_per_checkpoint(cfg, pd) * cfg.checkpoints
    extra = {}
    if "steps_per_epoch" in inspect.signature(cls.__init__).parameters:  # self_training
        # its teacher refreshes every source epoch, or every checkpoint interval when shorter
        # (else a short run would never refresh it)
        epoch = math.ceil(len(pd.x_s) / cfg.batch_size)
        extra["steps_per_epoch"] = min(epoch, steps_per_checkpoint(cfg, pd))
    return cls(featurizer, pd.n_classes, config, total_steps=total, **extra)


def steps_per_checkpoint(cfg, pd: PairData) -> int:
    return max(1, math.ceil(pd.steps / cfg.checkpoints))


@torch.no_grad()
def embed(method, x: np.ndarray, device, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(features, logits) of `x` in eval mode."""
    method.eval()
    feats, logits = [], []
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(np.ascontiguousarray(x[i : i + batch])).to(device)
        f = method.featurizer(xb)
        feats.append(f.float().cpu())
        logits.append(method.classifier(f).float().cpu())
    return torch.cat(feats).numpy(), torch.cat(logits).numpy()


def accuracy(method, x, y, device) -> float:
    return float((embed(method, x, device)[1].argmax(1) == y).mean())


def unsupervised_scores(
    method, x_sv: np.ndarray, y_sv: np.ndarray, x_t: np.ndarray, device, seed: int
) -> dict[str, float]:
    """Every selection criterion of one model, from labelled SOURCE validation images and
    unlabelled TARGET images: the only inputs any selection sees (no target label exists here)."""
    from adaptflow.evaluation import da_scores

    f_s, logits_s = embed(method, x_sv, device)
    f_t, logits_t = embed(method, x_t, device)
    if not (np.isfinite(logits_s).all() and np.isfinite(logits_t).all()):  # a diverged model
        return dict.fromkeys(
            ("dev", "iwcv", "snd", "entropy", "source_val", "weight_ess"), math.nan
        )
    logp_s = torch.log_softmax(torch.from_numpy(logits_s), 1)
    losses_s = (-logp_s[torch.arange(len(y_sv)), torch.from_numpy(y_sv)]).numpy()
    probs_t = torch.softmax(torch.from_numpy(logits_t), 1).numpy()
    w_raw = da_scores.importance_weights(f_s, f_t, seed, normalise=False)
    w = w_raw / max(float(w_raw.mean()), 1e-12)  # IWCV: self-normalised weights
    return {
        # DEV's control variate needs E[w] = 1 unforced; the raw ratios are clipped at 10
        # (variance), so when clipping bites E[w] < 1 and DEV inherits that bias
        "dev": da_scores.dev(losses_s, w_raw),
        "iwcv": da_scores.iwcv(losses_s, w),
        "snd": da_scores.snd(probs_t),
        "entropy": da_scores.prediction_entropy(probs_t),
        "source_val": float((logits_s.argmax(1) == y_sv).mean()),
        # a diagnostic, not a criterion: the effective share of source points behind DEV and
        # IWCV, (Σw)² / (n Σw²). Near-separable domains leave a few points carrying all the
        # weight, and DEV/IWCV then say little about the target risk
        "weight_ess": da_scores.effective_sample_fraction(w_raw),
    }


# ---------------------------------------------------------------- one run
@dataclass
class Candidate:
    point: dict
    step: int
    scores: dict[str, float]  # on the pick half
    target_acc: float  # reported only (the oracle-selected column); never compared to select
    state: dict | None = None
    curve_step: int = 0  # x of the logged curves: grid point after grid point


def train_and_select(
    name: str, cfg, params, pd: PairData, seed: int, device, progress=False, on_checkpoint=None
) -> tuple[object, Candidate, list[Candidate], float]:
    """Train `name` at every grid point; return (chosen model, chosen candidate, every
    candidate, training seconds). The choice reads `unsupervised_scores` only (a non-finite
    score never wins); target_oracle keeps its last checkpoint (no selection: it is the ceiling,
    and a source-side criterion means nothing for a model trained on the target). A grid point
    whose training diverges is dropped with a warning."""
    from adaptflow.evaluation.da_scores import oriented
    from adaptflow.training import NonFiniteLossError, Trainer
    from adaptflow.training.loaders import PairedLoader

    def value(c: Candidate) -> float:
        v = oriented(cfg.selection, c.scores[cfg.selection])
        return v if math.isfinite(v) else -math.inf

    per = steps_per_checkpoint(cfg, pd)
    sv_idx, t_idx = pd.pick
    x_sv, y_sv, x_tsel = pd.x_sv[sv_idx], pd.y_sv[sv_idx], pd.x_t[t_idx]
    candidates: list[Candidate] = []
    best: Candidate | None = None
    seconds = 0.0
    for index, point in enumerate(grid_points(cfg.grid.get(name, {}))):
        seed_everything(seed)
        method = new_method(name, cfg, params, pd, point)
        oracle = method.uses_target_labels
        fit = pd.oracle_train if oracle else pd.t_train
        y_t = pd.y_pool[fit] if oracle else None
        x_sc, y_sc = pd.scored(oracle)
        loader = PairedLoader(
            pd.x_s, pd.y_s, pd.x_t[fit], cfg.batch_size, seed, y_t=y_t, steps_per_epoch=per
        )
        opt = torch.optim.Adam(method.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

        def checkpoint(
            epoch: int,
            metrics: dict,
            method=method,
            point=point,
            oracle=oracle,
            sc=(x_sc, y_sc),
            index=index,
        ) -> None:
            nonlocal best
            scores = unsupervised_scores(method, x_sv, y_sv, x_tsel, device, seed)
            step = epoch * per
            cand = Candidate(
                dict(point),
                step,
                scores,
                accuracy(method, *sc, device),
                curve_step=index * per * cfg.checkpoints + step,  # grid points in turn
            )
            if best is None or oracle or value(cand) > value(best):
                cand.state = copy.deepcopy(method.state_dict())
                if best is not None:
                    best.state = None
                best = cand
            candidates.append(cand)
            if on_checkpoint:
                on_checkpoint(cand, metrics)
            method.train()

        trainer = Trainer(
            device,
            epochs=cfg.checkpoints,
            amp=cfg.amp,
            log_every=cfg.log_every,
            monitor="loss",
            progress=progress,
            on_epoch_end=checkpoint,
            desc=f"da/{pd.label}/{name}-s{seed}",
            restore_best=False,
        )
        try:
            history = trainer.fit(method, loader, optimizers=[opt])
        except NonFiniteLossError as e:
            log.warning("da %s/%s seed %d %s diverged, dropped: %s", pd.label, name, seed, point, e)
            continue
        seconds += history.train_seconds
    if best is None:
        raise NonFiniteLossError(
            f"da pair {pd.label!r}, method {name}, seed {seed}: every grid point diverged; lower "
            "da.lr or the method's weight"
        )
    model = new_method(name, cfg, params, pd, best.point)
    model.load_state_dict(best.state)
    best.state = None
    return model.to(device).eval(), best, candidates, seconds


def to_network(method, pd: PairData) -> torch.nn.Module:
    """What gets logged and served: featurizer + classifier (no domain head, no teacher), after
    the z-scoring the pair applied to target inputs, so it takes raw target examples."""
    from adaptflow.models.featurizers import Standardize

    layers = [copy.deepcopy(method.featurizer), copy.deepcopy(method.classifier)]
    if pd.target_stats is not None:
        layers.insert(0, Standardize(*pd.target_stats))
    return torch.nn.Sequential(*layers).cpu().eval()


def raw_target_rows(pd: PairData, n: int) -> np.ndarray:
    """The first `n` target examples as a user has them (before the pair's z-scoring): what the
    served network, which standardises itself, takes."""
    x = pd.x_t[:n]
    if pd.target_stats is None:
        return x
    mean, std = (np.asarray(a, dtype=x.dtype) for a in pd.target_stats)
    return x * std + mean


def gap_metrics(f_s: np.ndarray, f_t: np.ndarray, seed: int) -> dict[str, float]:
    """Proxy A-distance and MMD² between source-test and scored-target features."""
    from adaptflow.evaluation import da_scores

    return {
        "pad": da_scores.proxy_a_distance(f_s, f_t, seed, max_points=GAP_POINTS),
        "mmd": da_scores.feature_mmd(f_s, f_t, seed, max_points=GAP_POINTS),
    }


# ---------------------------------------------------------------- the stage
def run(params, ctx: StageContext, data: dict[str, Prepared]) -> StageOutcome:
    import pandas

    from adaptflow.stages import da_report
    from adaptflow.tracking import runs
    from adaptflow.tracking.models import log_torch_model

    cfg = params.da
    outcome = StageOutcome(model_name=params.model_name("da"))
    records: list[dict] = []
    skipped: dict[str, str] = {}
    extras: dict[str, dict] = {}
    protocol = selection_protocol(cfg.selection)
    runs.set_tags({"adaptflow.selection_protocol": protocol})
    pairs: dict[str, PairData] = {}
    for label, pc in cfg.pairs.items():  # every pair checked (classes, shapes) before training
        missing = [n for n in (pc.source, pc.target) if n not in data]
        if missing:
            skipped[label] = "; ".join(data_skip_reason(params, n) for n in missing)
            runs.set_tags({f"adaptflow.da.skipped.{label}": skipped[label][:500]})
            continue
        pairs[label] = pair_data(label, pc, cfg, data[pc.source], data[pc.target], params.seed)
    for label, pd in pairs.items():
        runs.set_tags(
            {
                f"adaptflow.da.{label}.protocol": cfg.pairs[label].protocol,
                f"adaptflow.da.{label}.preprocessing": str(pd.meta["preprocessing"])[:500],
            }
        )
    # every (pair, seed, method) is a sweep unit: on `runner: dask` they run concurrently
    order = [
        (label, name, seed)
        for label in pairs
        for i, seed in enumerate(cfg.seeds)
        for name in cfg.methods[i % len(cfg.methods) :] + cfg.methods[: i % len(cfg.methods)]
    ]  # the method order rotates with the seed: no method always runs first
    results = sweep(
        [
            functools.partial(sweep_unit, name, cfg, params, pairs[label], seed, protocol)
            for label, name, seed in order
        ],
        ctx,
        [f"da/{label}/{name}-s{seed}" for label, name, seed in order],
    )
    for label, pd in pairs.items():
        pc = cfg.pairs[label]
        models: dict[tuple[str, int], object] = {}
        for (lbl, name, seed), (rec, model) in zip(order, results, strict=True):
            if lbl == label:
                records.append(rec)
                if seed == cfg.seeds[0]:
                    models[(name, seed)] = model
        extras[label] = {"inputs": input_gap(pd, params.seed), "pair": pd.summary()}
        da_report.log_runs(records)  # survives a crash in a later pair's registration
        reg = register_choice(label, records, cfg, models, pd, ctx.device, params.seed)
        if reg is not None:
            extras[label]["registered"] = reg["method"]
            why = da_report.saturation(
                pandas.DataFrame(records), label, reg["method"], cfg.selection
            )
            extras[label]["saturated"] = why
            if why:
                log.warning("da %s: %s", label, why)
                runs.set_tags({f"adaptflow.da.saturated.{label}": why[:500]})
            outcome.metrics[f"da/{label}/gate_score"] = reg["gate_score"]
            with runs.run(
                f"da/{label}-registered",
                tags={"adaptflow.pair": label, "adaptflow.kind": "registered"},
            ):
                runs.set_tags({"adaptflow.registered_method": reg["method"]})
                if why:  # also where a deployer looks: this run and the model version
                    runs.set_tags({"adaptflow.da.saturated": why[:500]})
                runs.log_metrics({f"da/gate_{cfg.selection}": reg["gate_raw"]})
                uri = log_torch_model(to_network(reg["model"], pd), raw_target_rows(pd, 4))
            outcome.models[label] = LabelledModel(
                uri,
                {
                    "dataset_digest": f"{data[pc.source].digest}+{data[pc.target].digest}",
                    "input_shape": "x".join(map(str, pd.input_shape)),
                    "val_split": split_fingerprint(pd.gate[0])
                    + "+"
                    + split_fingerprint(pd.gate[1]),
                    # the gate compares scores of one criterion only: it is part of the model
                    "model": f"{cfg.featurizer}:{cfg.feature_dim}:{cfg.init}:{cfg.selection}",
                    "selection": f"{cfg.selection}:{cfg.select_points}",
                    "pair": json.dumps(pc.model_dump(mode="json"), sort_keys=True),
                },
                tags={"method": reg["method"]} | ({"saturated": why[:500]} if why else {}),
            )
        tsne(pd, models, reg, cfg, ctx.device, params.seed)
    summary = da_report.publish(records, cfg, skipped, extras)
    summary |= outcome.metrics
    summary = {k: float(v) for k, v in summary.items() if math.isfinite(v)}
    runs.log_metrics(summary)
    outcome.metrics = summary
    return outcome


def data_skip_reason(params, name: str) -> str:
    from pathlib import Path

    manifest = Path(params.data.prepared_dir) / f"{name}.json"
    try:
        return f"{name}: " + json.loads(manifest.read_text()).get("skipped", "not prepared")
    except (OSError, ValueError):
        return f"{name}: not prepared (run `make data`)"


def input_gap(pd: PairData, seed: int) -> dict[str, float]:
    """The pair's gap in input space (flattened pixels / vectors): before any network."""
    from adaptflow.evaluation import da_scores

    flat = lambda x: x.reshape(len(x), -1)  # noqa: E731
    return {"pad": da_scores.proxy_a_distance(flat(pd.x_st), flat(pd.x_te), seed, GAP_POINTS)}


def sweep_unit(name, cfg, params, pd: PairData, seed: int, protocol: str, ctx) -> tuple:
    """One unit of the stage's sweep: (record, model); the model only for the first seed
    (registration and t-SNE use those; a Dask worker sends nothing more back)."""
    rec, model = one_run(name, cfg, params, pd, seed, ctx, protocol)
    return rec, model if seed == cfg.seeds[0] else None


def one_run(name, cfg, params, pd: PairData, seed: int, ctx, protocol: str) -> tuple[dict, object]:
    from adaptflow.tracking import plots, runs

    tags = {
        "adaptflow.pair": pd.label,
        "adaptflow.method": name,
        "adaptflow.seed": str(seed),
        "adaptflow.selection_protocol": protocol,
        "adaptflow.protocol": pd.protocol,
        "adaptflow.uses_target_labels": str(name == ORACLE).lower(),
    }
    with runs.run(f"da/{pd.label}/{name}-s{seed}", tags=tags):
        runs.log_params(
            {"method": name, "pair": pd.label, "seed": seed, "selection": cfg.selection}
        )

        def on_checkpoint(cand: Candidate, metrics: dict) -> None:
            runs.log_metrics(
                {f"da/train_{k}": v for k, v in metrics.items()}
                | {f"da/pick_{k}": v for k, v in cand.scores.items()}
                | {"da/oracle_target_acc": cand.target_acc},
                step=cand.curve_step,
            )

        t0 = time.perf_counter()
        model, chosen, cands, train_s = train_and_select(
            name, cfg, params, pd, seed, ctx.device, ctx.progress, on_checkpoint
        )
        x_sc, y_sc = pd.scored(model.uses_target_labels)
        f_t, logits = embed(model, x_sc, ctx.device)
        f_s, logits_s = embed(model, pd.x_st, ctx.device)
        gap = gap_metrics(f_s, f_t, seed)
        rec = {
            "pair": pd.label,
            "method": name,
            "seed": seed,
            "target_acc": float((logits.argmax(1) == y_sc).mean()),
            "oracle_selected_acc": max(c.target_acc for c in cands),
            # the peer's protocol (no selection) has one last checkpoint: not defined for a grid
            "last_acc": cands[-1].target_acc
            if len(grid_points(cfg.grid.get(name, {}))) == 1
            else math.nan,
            "source_test_acc": float((logits_s.argmax(1) == pd.y_st).mean()),
            "steps": steps_per_checkpoint(cfg, pd) * cfg.checkpoints,
            "chosen_step": chosen.step,
            "chosen_point": str(chosen.point),
            "candidates": len(cands),
            **{f"chosen_{k}": v for k, v in chosen.scores.items()},  # pick half
            **gap,
            "train_seconds": train_s,
            "wall_seconds": time.perf_counter() - t0,
        }
        runs.log_params({"chosen_step": chosen.step, "chosen_point": str(chosen.point)})
        runs.log_metrics(
            {
                f"da/{k}": float(v)
                for k, v in rec.items()
                if isinstance(v, (int, float)) and k != "seed"
            }
        )
        runs.log_text(
            "\n".join(
                ["point,step," + ",".join(chosen.scores) + ",oracle_target_acc"]
                + [
                    f'"{c.point}",{c.step},'
                    + ",".join(f"{v:.6g}" for v in c.scores.values())
                    + f",{c.target_acc:.4f}"
                    for c in cands
                ]
            )
            + "\n",
            "candidates.csv",
        )
        runs.log_figure(
            plots.confusion(y_sc, logits.argmax(1), pd.meta["classes"], f"{pd.label} {name}"),
            "confusion.png",
        )
    return rec, model


def register_choice(label, records, cfg, models, pd: PairData, device, seed: int) -> dict | None:
    """The method to register for a pair: best mean oriented criterion over seeds (pick half),
    adapted methods and source_only alike (never the oracle); its first-seed model's gate score
    is the criterion on the gate half."""
    from adaptflow.evaluation.da_scores import oriented

    key = f"chosen_{cfg.selection}"
    means = {}
    for name in cfg.methods:
        if name == ORACLE:
            continue
        vals = [r[key] for r in records if r["pair"] == label and r["method"] == name]
        mean = float(np.mean([oriented(cfg.selection, v) for v in vals]))
        if math.isfinite(mean):  # a method with a non-finite score on any seed cannot win
            means[name] = mean
    if not means:
        return None
    method = max(means, key=lambda m: (means[m], -cfg.methods.index(m)))
    model = models[(method, cfg.seeds[0])]
    sv_idx, t_idx = pd.gate
    raw = unsupervised_scores(model, pd.x_sv[sv_idx], pd.y_sv[sv_idx], pd.x_t[t_idx], device, seed)
    raw_value = raw[cfg.selection]
    return {
        "method": method,
        "model": model,
        "gate_raw": raw_value,
        "gate_score": oriented(cfg.selection, raw_value),
    }


def tsne(pd: PairData, models, reg, cfg, device, seed: int) -> None:
    """t-SNE of source-test vs target features (seeded samples of `tsne_points` each: files are
    often sorted by class): source_only (before) and the registered method (after
    adaptation), first seed; one panel when source_only is the registered method."""
    from adaptflow.tracking import plots, runs

    if cfg.tsne_points == 0 or reg is None:
        return
    from sklearn.manifold import TSNE

    x_s = pd.x_st[_first(len(pd.x_st), cfg.tsne_points, seed + 19)]
    x_t = pd.x_te[_first(len(pd.x_te), cfg.tsne_points, seed + 23)]
    panels, domains = {}, None
    shown = [("before: source_only", BASELINE)]
    if reg["method"] != BASELINE:
        shown.append((f"after: {reg['method']}", reg["method"]))
    for title, name in shown:
        if (name, cfg.seeds[0]) not in models:
            continue
        f_s, _ = embed(models[(name, cfg.seeds[0])], x_s, device)
        f_t, _ = embed(models[(name, cfg.seeds[0])], x_t, device)
        f = np.concatenate([f_s, f_t])
        panels[title] = TSNE(  # 500 iterations: the layout has settled (250 exaggerated)
            2, init="pca", random_state=seed, perplexity=min(30, len(f) - 1), max_iter=500
        ).fit_transform(f)
        domains = np.r_[np.zeros(len(f_s)), np.ones(len(f_t))]
    if panels:
        runs.log_figure(
            plots.domains(panels, domains, f"{pd.label}: source (0) vs target (1)"),
            f"tsne_{pd.label}.png",
        )


STAGE = STAGES.register("da")(
    StageSpec(
        name="da",
        datasets=datasets,
        run=run,
        headline=("da/claims_holding", "da/claims_holding_holm"),
        selection="unsupervised (da.selection): see the adaptflow.selection_protocol tag",
        label_kind="pair",
        gate=Gate("da/{label}/gate_score", higher_is_better=True),
        shared_params=("transfer.backbones",),
        fingerprint=fingerprint,
        optional_inputs=True,
    )
)
