"""Stage `finetune`: feature extraction vs fine-tuning vs scratch, over label budgets (seed Q4-Q5).

For each backbone, seed and label fraction f of the target task (`transfer`), three arms train
on the same labelled subset:
- `features`: the frozen source backbone's features (the `features` stage's artifact when the
  pipeline passes it along, else extracted here) + a new linear head;
- `finetune`: the source backbone with a new head, the last `finetune.unfreeze` blocks trained
  with layer-wise lr decay (the head at lr, block k from the top at lr·decay^k) and warm-up;
- `scratch`: the same architecture from random init, every layer, the same epochs, steps, lr
  schedule and batch size as `finetune` (uniform lr: there is nothing pretrained to protect).

Label budget (as `pretrain`): N = the target's training split; a seeded monitor split is held out
of the pool; at f the arms train on a stratified floor(f·N) of the pool for a fixed budget (no
early stopping, last epoch kept): no labels are spent on selection. The monitor draws per-epoch
accuracy curves (time and epochs to a common accuracy target) and selects nothing below f = 1.
At f = 1 (pool + monitor = N, inside the budget) the monitor's two halves choose the registered
arm (first half) and measure its registry gate (second half): the gate is never measured on the
data that chose the arm. Test data is reported only.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass, replace

import numpy as np

from adaptflow.data import Prepared
from adaptflow.stages.base import (
    STAGES,
    Gate,
    LabelledModel,
    StageContext,
    StageOutcome,
    StageSpec,
    split_fingerprint,
    test_size,
)
from adaptflow.stages.budget import data_plan, gate_indices, label_budget
from adaptflow.sweep import sweep as run_units
from adaptflow.training import seed_everything

ARMS = ("features", "finetune", "scratch")
KEY = "transfer.label_fractions"
SELECTION = (
    "fixed budget, last epoch kept, no checkpoint selection; labels per run (training) <= "
    "floor(f*N); the monitor split draws curves only; at f=1 (inside the budget) its first "
    "half picks the registered arm per backbone and its second half measures the registry "
    "gate; test data selects nothing"
)


def steps_budget(n_fit: int, batch_size: int, epochs: int, min_steps: int) -> int:
    """Epochs of a run on n_fit images: `epochs`, raised so the run takes >= min_steps steps
    (a 36-image budget would otherwise get 3 optimizer steps). Identical for every arm."""
    per_epoch = math.ceil(n_fit / batch_size)
    return max(epochs, math.ceil(min_steps / per_epoch))


def monitor_halves(monitor: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The monitor split cut in two, seeded: (arm selection, gate), disjoint."""
    perm = np.random.default_rng(seed + 7919).permutation(monitor)
    half = len(perm) // 2
    return np.sort(perm[:half]), np.sort(perm[half:])


def target_features(ctx, label, target, digest, model, source_uri, split, n_test, device):
    """(f_train, f_test, extract seconds, where): the features stage's artifact when the pipeline
    passed its run along and it holds this dataset (same digest) embedded by this very source
    model, else extracted here."""
    from adaptflow.stages.features import extract
    from adaptflow.tracking import runs

    run_id = ctx.upstream.get("features", {}).get("run_id")
    arrays = runs.load_arrays(run_id, f"features/{label}/{target}.npz") if run_id else None
    same_model = arrays is not None and str(arrays.get("source_model", "")) == source_uri
    if same_model and str(arrays["digest"]) == digest and len(arrays["f_test"]) >= n_test:
        seconds = float(arrays["extract_seconds"]) if "extract_seconds" in arrays else math.nan
        return arrays["f_train"], arrays["f_test"][:n_test], seconds, f"features run {run_id}"
    arrays, seconds = extract(model, split, device, n_test)
    return arrays["f_train"], arrays["f_test"], seconds, "extracted here"


def curve_record(history, key: str = "monitor_acc") -> dict:
    return {
        "curve": history.series(key),
        "epoch_times": np.cumsum(history.series("epoch_seconds")).tolist(),
    }


@dataclass
class ArmContext:
    """What every arm of one backbone trains and is measured on."""

    source: object  # the source backbone (never modified: arms copy it)
    bb: object  # its transfer.backbones entry (scratch builds the same net)
    f_all: np.ndarray  # frozen features of the whole training split
    f_te: np.ndarray
    x_all: np.ndarray
    y_all: np.ndarray
    x_te: np.ndarray
    y_te: np.ndarray
    monitor: np.ndarray  # training-split indices of the monitor split
    n_classes: int
    per_image_extract: float  # seconds to embed one image (the features arm's clock)
    cfg: object  # params.finetune
    fcfg: object  # params.features (the linear head's budget)
    device: object
    progress: bool


def train_arm(arm: str, c: ArmContext, fit: np.ndarray, seed: int, on_epoch, desc: str):
    """Train one arm on the labelled indices `fit` for its fixed budget: (model as one network,
    history, test accuracy, trainable parameters, training seconds)."""
    from adaptflow.methods.transfer import accuracy, finetune, train_head
    from adaptflow.stages.source import new_backbone

    cfg, mon = c.cfg, c.monitor
    if arm == "features":
        epochs = steps_budget(len(fit), c.fcfg.head_batch_size, c.fcfg.head_epochs, cfg.min_steps)
        head, history = train_head(
            c.f_all[fit],
            c.y_all[fit],
            c.n_classes,
            epochs=epochs,
            lr=c.fcfg.head_lr,
            batch_size=c.fcfg.head_batch_size,
            weight_decay=c.fcfg.head_weight_decay,
            seed=seed,
            device=c.device,
            progress=c.progress,
            monitor=(c.f_all[mon], c.y_all[mon]),
            on_epoch_end=on_epoch,
        )
        test_acc = accuracy(head, c.f_te, c.y_te, c.device)
        trainable = sum(p.numel() for p in head.parameters())
        # wall time includes embedding the images it trained on
        seconds = history.train_seconds + c.per_image_extract * len(fit)
        return _with_head(c.source, head, c.n_classes), history, test_acc, trainable, seconds
    if arm == "finetune":
        net = copy.deepcopy(c.source)
        net.reset_classifier(c.n_classes)
        unfreeze, decay = cfg.unfreeze, cfg.layer_decay
    else:  # scratch: the same architecture from random init, every layer, uniform lr
        net = new_backbone(c.bb, c.n_classes, in_chans=c.x_all.shape[1])
        unfreeze, decay = "all", 1.0
    method, history = finetune(
        net,
        c.x_all[fit],
        c.y_all[fit],
        unfreeze=unfreeze,
        epochs=steps_budget(len(fit), cfg.batch_size, cfg.epochs, cfg.min_steps),
        lr=cfg.lr,
        layer_decay=decay,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size,
        seed=seed,
        device=c.device,
        progress=c.progress,
        monitor=(c.x_all[mon], c.y_all[mon]),
        on_epoch_end=on_epoch,
        desc=desc,
    )
    model = method.model
    test_acc = accuracy(model, c.x_te, c.y_te, c.device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return model, history, test_acc, trainable, history.train_seconds


def arm_unit(label, arm, c: ArmContext, fit, fraction, seed, keep: bool, ctx) -> tuple:
    """One sweep unit: one arm at one label fraction and seed, its own nested run; (record,
    model) with the model only when `keep` (the gate's fraction and seed)."""
    from adaptflow.tracking import runs

    c = replace(c, device=ctx.device, progress=ctx.progress)
    name = f"{label}-{arm}-f{fraction:g}-s{seed}"
    common = {"backbone": label, "fraction": fraction, "seed": seed, "n_labels": len(fit)}
    tags = {
        "adaptflow.backbone": label,
        "adaptflow.fraction": f"{fraction:g}",
        "adaptflow.seed": str(seed),
        "adaptflow.selection_protocol": SELECTION,
        "adaptflow.arm": arm,
    }
    with runs.run(f"finetune/{name}", tags=tags):
        runs.log_params(common | {"arm": arm})

        def on_epoch(epoch: int, m: dict[str, float]) -> None:
            runs.log_metrics({f"finetune/{k}": v for k, v in m.items()}, step=epoch)

        seed_everything(seed)
        model, history, test_acc, trainable, seconds = train_arm(
            arm, c, fit, seed, on_epoch, f"finetune/{name}"
        )
        curves = curve_record(history)
        if arm == "features":  # its clock includes embedding its images
            shift = c.per_image_extract * len(fit)
            curves["epoch_times"] = [t + shift for t in curves["epoch_times"]]
        rec = common | {
            "arm": arm,
            "test_acc": test_acc,
            "train_seconds": seconds,
            "epoch_seconds": float(np.mean(history.series("epoch_seconds"))),
            "epochs": len(history.epochs),
            "trainable_params": trainable,
            **curves,
        }
        runs.log_metrics(
            {
                "finetune/test_acc": test_acc,
                "finetune/train_seconds": seconds,
                "finetune/trainable_params": trainable,
            }
        )
    return rec, model if keep else None


def run(params, ctx: StageContext, data: dict[str, Prepared]) -> StageOutcome:
    from adaptflow.methods.transfer import accuracy
    from adaptflow.stages import transfer_report
    from adaptflow.stages.features import check_architecture, source_models
    from adaptflow.stages.source import backbone_id
    from adaptflow.tracking import runs
    from adaptflow.tracking.models import load_torch_model, log_torch_model

    cfg, sweep, fcfg = params.finetune, params.transfer, params.features
    prepared = data[sweep.target]
    split = prepared.split
    x_all, y_all = split.x_train, split.y_train
    n_test = test_size(split, sweep.max_test)
    x_te, y_te = split.x_test[:n_test], split.y_test[:n_test]
    n_classes, in_shape = split.num_classes, tuple(x_all.shape[1:])
    plan = data_plan(len(x_all), sweep.val_fraction, sweep.max_train, params.seed)
    budgets = {  # all checked before any training
        (f, s): label_budget(y_all, plan, f, s, "last_epoch", 0.5, key=KEY)
        for f in sweep.label_fractions
        for s in sweep.seeds
    }
    f_gate, s_gate = sweep.label_fractions[-1], sweep.seeds[0]
    gate_indices(plan, budgets[(f_gate, s_gate)], key=KEY)  # raises unless f = 1 is swept
    pick_idx, gate_idx = monitor_halves(plan.monitor, params.seed)
    mon = plan.monitor
    uris = source_models(ctx, list(sweep.backbones))
    outcome = StageOutcome(model_name=params.model_name("finetune"))
    records: list[dict] = []
    summary: dict[str, float] = {}
    for label, bb in sweep.backbones.items():
        source = load_torch_model(uris[label], f"source model of backbone {label!r}")
        check_architecture(source, bb, in_shape[0], uris[label], label)
        f_all, f_te, extract_s, where = target_features(
            ctx,
            label,
            sweep.target,
            prepared.digest,
            source,
            uris[label],
            split,
            n_test,
            ctx.device,
        )
        per_image_extract = extract_s / (len(f_all) + len(f_te))
        ctx_arm = ArmContext(
            source,
            bb,
            f_all,
            f_te,
            x_all,
            y_all,
            x_te,
            y_te,
            mon,
            n_classes,
            per_image_extract,
            cfg,
            fcfg,
            ctx.device,
            ctx.progress,
        )
        order = [  # every (seed, fraction, arm) is a sweep unit (concurrent on runner: dask)
            (seed, fraction, arm)
            for i, seed in enumerate(sweep.seeds)
            for fraction in sweep.label_fractions
            for arm in ARMS[i % len(ARMS) :] + ARMS[: i % len(ARMS)]  # no arm always first
        ]
        results = run_units(
            [
                functools.partial(
                    arm_unit,
                    label,
                    arm,
                    ctx_arm,
                    budgets[(fraction, seed)].fit,
                    fraction,
                    seed,
                    fraction == f_gate and seed == s_gate,
                )
                for seed, fraction, arm in order
            ],
            ctx,
            [f"finetune/{label}-{arm}-f{fraction:g}-s{seed}" for seed, fraction, arm in order],
        )
        candidates = {
            arm: model
            for (_, _, arm), (_, model) in zip(order, results, strict=True)
            if model is not None
        }
        records += [rec for rec, _ in results]
        pick = _register_best(
            label, candidates, x_all, y_all, pick_idx, gate_idx, ctx.device, accuracy
        )
        summary[f"finetune/{label}/gate_val_acc"] = pick["gate_acc"]
        summary |= {f"finetune/{label}/pick_acc/{a}": v for a, v in pick["pick_accs"].items()}
        with runs.run(
            f"finetune/{label}-registered",
            tags={"adaptflow.backbone": label, "adaptflow.kind": "registered"},
        ):
            runs.set_tags(
                {"adaptflow.registered_arm": pick["arm"], "adaptflow.features_from": where}
            )
            uri = log_torch_model(pick["model"], x_all[gate_idx[:4]])
        outcome.models[label] = LabelledModel(
            uri,
            {
                "dataset_digest": prepared.digest,
                "input_shape": "x".join(map(str, in_shape)),
                "val_split": split_fingerprint(gate_idx),
                "model": f"{label}:{backbone_id(bb, in_shape, n_classes)}",
            },
            tags={"arm": pick["arm"]},
        )
    summary |= transfer_report.publish(records, params, plan, ctx, n_test, n_classes)
    summary = {k: float(v) for k, v in summary.items() if math.isfinite(v)}
    runs.log_metrics(summary)
    outcome.metrics = summary
    return outcome


def _with_head(source, head, n_classes: int):
    """The features arm as one network: the frozen source backbone with the trained linear head
    as its classifier (the features were its pre-logits, so logits are identical)."""
    import torch

    net = copy.deepcopy(source)
    net.reset_classifier(n_classes)
    classifier = net.get_classifier()
    with torch.no_grad():
        classifier.weight.copy_(head.weight)
        classifier.bias.copy_(head.bias)
    return net.eval()


def _register_best(label, candidates, x_all, y_all, pick_idx, gate_idx, device, accuracy) -> dict:
    """The arm to register for a backbone: the f=1 model with the best accuracy on the first
    monitor half; its gate value is measured on the second half (not the data that chose it)."""
    pick_accs = {
        arm: accuracy(m, x_all[pick_idx], y_all[pick_idx], device) for arm, m in candidates.items()
    }
    arm = max(pick_accs, key=lambda a: (pick_accs[a], -ARMS.index(a)))
    model = candidates[arm]
    gate_acc = accuracy(model, x_all[gate_idx], y_all[gate_idx], device)
    return {"arm": arm, "model": model, "gate_acc": gate_acc, "pick_accs": pick_accs}


STAGE = STAGES.register("finetune")(
    StageSpec(
        name="finetune",
        datasets=lambda p: [p.transfer.target],
        run=run,
        depends_on=("source", "features"),
        headline=("finetune/claims_holding",),
        selection=SELECTION,
        label_kind="backbone",
        gate=Gate("finetune/{label}/gate_val_acc", higher_is_better=True),
        shared_params=("transfer", "features"),
    )
)
