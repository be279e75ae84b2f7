"""Stage `source`: the pretrained backbones of transfer learning, made offline (seed Q4).

Each backbone of `transfer.backbones` (timm) is trained on a large labelled source task that
ships with the machine (`source.dataset`, by default characters 0-9 + A-Z rendered from
matplotlib's fonts with random affine/elastic/noise), then logged and registered as one version
per backbone of `<prefix>-source`, each gated on its source validation accuracy against the
version holding `champion-<backbone>`. Downstream stages load these models from the URIs the
pipeline passes along, or from the registry's `champion-<backbone>` alias when run alone.

`source.pretrained: hub` starts from timm's own weights (online only: offline it fails at once)
and a path starts from a local checkpoint (`torch.load(weights_only=True)`); then only a new head
for the source classes is trained on the frozen backbone (the weights are the point, and the
linear-probe accuracy on the source task is what the gate compares). Source labels are
synthetic and free: no label budget; the validation split selects nothing (fixed epochs) and
measures the gate; the test split is reported.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

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
    split_train_val,
    test_size,
)
from adaptflow.training import seed_everything

SELECTION = (
    "fixed epochs, last epoch kept, no checkpoint selection; the source validation split "
    "(synthetic labels, outside training) measures each backbone's registry gate; the source "
    "test split is reported only"
)


def backbone_id(cfg, in_shape: tuple[int, ...], n_classes: int) -> str:
    """The network interface of a backbone config: versions of another architecture, size or
    input are 'not comparable' at the registry gate, never a silent swap."""
    spec = json.dumps(
        {"arch": cfg.arch, "kwargs": cfg.kwargs, "small": cfg.small_input}, sort_keys=True
    )
    digest = hashlib.sha256(spec.encode()).hexdigest()[:8]
    return f"{cfg.arch}-{digest}-{'x'.join(map(str, in_shape))}-{n_classes}"


def weights_fingerprint(params) -> dict[str, str]:
    """sha256 of a `source.pretrained` checkpoint file: replacing the file at the same path is a
    new input (cache key) and another model (gate context), not the same one."""
    pretrained = params.source.pretrained
    if pretrained in ("source", "hub"):
        return {}
    return {"pretrained_sha256": hashlib.sha256(Path(pretrained).read_bytes()).hexdigest()}


def new_backbone(bb, n_classes: int, in_chans: int, hub: bool = False):
    """The network a `transfer.backbones` entry describes (random init, or timm's hub weights)."""
    from adaptflow.models.backbones import build_backbone

    return build_backbone(
        bb.arch, n_classes, in_chans=in_chans, kwargs=bb.kwargs, small_input=bb.small_input, hub=hub
    )


def build(bb, n_classes: int, in_chans: int, pretrained: str):
    """A backbone per `source.pretrained`: random init (to train here), timm's hub weights, or a
    checkpoint file. Returns (model, unfreeze): what the source run trains."""
    from adaptflow.models.backbones import load_weights

    model = new_backbone(bb, n_classes, in_chans, hub=pretrained == "hub")
    if pretrained == "source":
        return model, "all"
    if pretrained != "hub":
        load_weights(model, pretrained)
    return model, 0


def run(params, ctx: StageContext, data: dict[str, Prepared]) -> StageOutcome:
    from adaptflow.methods.transfer import accuracy, finetune
    from adaptflow.tracking import plots, runs
    from adaptflow.tracking.models import log_torch_model

    cfg, sweep = params.source, params.transfer
    prepared = data[cfg.dataset]
    split = prepared.split
    train_idx, val_idx = split_train_val(
        len(split.x_train), cfg.val_fraction, cfg.max_train, params.seed
    )
    x_tr, y_tr = split.x_train[train_idx], split.y_train[train_idx]
    x_val, y_val = split.x_train[val_idx], split.y_train[val_idx]
    n_test = test_size(split, cfg.max_test)
    x_te, y_te = split.x_test[:n_test], split.y_test[:n_test]
    n_classes, in_shape = split.num_classes, tuple(x_tr.shape[1:])
    outcome = StageOutcome(model_name=params.model_name("source"))
    origin = cfg.pretrained if cfg.pretrained in ("source", "hub") else "file"
    origin += "".join(f"-{v[:12]}" for v in weights_fingerprint(params).values())
    summary: dict[str, float] = {}
    curves: dict[str, list[float]] = {}
    rows = []
    for label, bb in sweep.backbones.items():
        seed_everything(params.seed)
        model, unfreeze = build(bb, n_classes, in_shape[0], cfg.pretrained)
        tags = {
            "adaptflow.backbone": label,
            "adaptflow.arch": bb.arch,
            "adaptflow.pretrained": cfg.pretrained,
        }
        with runs.run(f"source/{label}", tags=tags):
            runs.log_params({"backbone": label, "arch": bb.arch, **runs.flatten(bb.kwargs, "kw")})

            def on_epoch(epoch: int, m: dict[str, float], label=label) -> None:
                runs.log_metrics({f"source/{k}": v for k, v in m.items()}, step=epoch)

            method, history = finetune(
                model,
                x_tr,
                y_tr,
                unfreeze=unfreeze,
                epochs=cfg.epochs,
                lr=cfg.lr,
                layer_decay=1.0,
                warmup_steps=cfg.warmup_steps,
                weight_decay=cfg.weight_decay,
                batch_size=cfg.batch_size,
                seed=params.seed,
                device=ctx.device,
                progress=ctx.progress,
                monitor=(x_val, y_val),
                on_epoch_end=on_epoch,
                desc=f"source/{label}",
            )
            net = method.model
            val_acc = accuracy(net, x_val, y_val, ctx.device)
            test_acc = accuracy(net, x_te, y_te, ctx.device)
            n_params = sum(p.numel() for p in net.parameters())
            m = {
                "val_acc": val_acc,
                "test_acc": test_acc,
                "train_seconds": history.seconds,
                "epoch_seconds": float(np.mean(history.series("epoch_seconds"))),
                "params": float(n_params),
                "feature_dim": float(net.num_features),
            }
            runs.log_metrics({f"source/{k}": v for k, v in m.items()})
            uri = log_torch_model(net, x_val[:4])
        curves[label] = history.series("monitor_acc")
        summary |= {f"source/{label}/{k}": v for k, v in m.items()}
        rows.append((label, bb.arch, n_params, m))
        outcome.models[label] = LabelledModel(
            uri,
            {
                "dataset_digest": prepared.digest,
                "input_shape": "x".join(map(str, in_shape)),
                "val_split": split_fingerprint(val_idx),
                # the pretrained origin is part of the interface: a hub probe is not a trained net
                "model": f"{label}:{backbone_id(bb, in_shape, n_classes)}:{origin}",
            },
        )
    summary["source/val_acc_min"] = min(m["val_acc"] for *_, m in rows)
    summary = {k: float(v) for k, v in summary.items() if math.isfinite(v)}
    runs.log_metrics(summary)
    text = report(rows, cfg, prepared, n_classes, len(x_tr), len(x_val), len(x_te))
    runs.log_text(text, "source/report.md")
    if ctx.parent_run_id:
        runs.log_text_to(ctx.parent_run_id, text, "source/report.md")
    runs.log_figure(
        plots.curves(curves, ylabel="source val accuracy", title="source task"),
        "source/val_acc_curves.png",
    )
    classes = split.meta.get("classes") or [str(k) for k in range(n_classes)]
    first = [
        int(np.flatnonzero(y_tr == k)[0]) for k in range(min(n_classes, 40)) if (y_tr == k).any()
    ]
    runs.log_figure(
        plots.image_grid(
            x_tr[first], 12, f"{cfg.dataset}: one image per class ({''.join(classes)[:40]})"
        ),
        "source/examples.png",
    )
    outcome.metrics = summary
    return outcome


def report(rows, cfg, prepared, n_classes: int, n_train: int, n_val: int, n_test: int) -> str:
    lines = [
        "# Source task: the pretrained backbones",
        "",
        f"Source `{cfg.dataset}` ({n_classes} classes; {n_train} training, {n_val} validation, "
        f"{n_test} test images; digest {prepared.digest}). Weights: `pretrained: "
        f"{cfg.pretrained}` ({'trained here' if cfg.pretrained == 'source' else 'loaded; a new head trained on the frozen backbone'}), "
        f"{cfg.epochs} epochs, AdamW lr {cfg.lr:g}, warm-up {cfg.warmup_steps} steps.",
        "",
        "| backbone | timm arch | parameters | val acc | test acc | train s | s/epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, arch, n_params, m in rows:
        lines.append(
            f"| {label} | {arch} | {n_params / 1e6:.2f} M | {m['val_acc']:.4f} | "
            f"{m['test_acc']:.4f} | {m['train_seconds']:.1f} | {m['epoch_seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


STAGE = STAGES.register("source")(
    StageSpec(
        name="source",
        datasets=lambda p: [p.source.dataset],
        run=run,
        headline=("source/val_acc_min",),
        selection=SELECTION,
        label_kind="backbone",
        gate=Gate("source/{label}/val_acc", higher_is_better=True),
        shared_params=("transfer.backbones",),  # its target/fractions do not matter here
        fingerprint=weights_fingerprint,
    )
)
