"""Stage `features`: feature extraction with the frozen source backbones (seed Q5, first half).

Each backbone the `source` stage registered (loaded from the URI the pipeline passes along, or
the registry's `champion-<backbone>` when run alone) embeds every dataset of `features.datasets`
once — no gradient, BatchNorm and Dropout in eval — and the features are saved as an artifact
(`features/<backbone>/<dataset>.npz`) that `finetune` reuses. On them: a new linear head trained
in torch and sklearn's LogisticRegression (one shot), beside logistic regression on the raw
pixels (what the features are worth). All training labels of each dataset are used here (the
label-budget sweep is `finetune`'s); fixed epochs, no selection; accuracy is on the test split.
"""

from __future__ import annotations

import math
import time

import numpy as np

from adaptflow.data import Prepared
from adaptflow.stages.base import STAGES, StageContext, StageOutcome, StageSpec, test_size

SELECTION = (
    "no selection: every training label of each dataset, fixed head epochs (last kept), "
    "sklearn LogisticRegression fitted once with a fixed C; test split reported only"
)


def source_models(ctx: StageContext, labels: list[str]) -> dict[str, str]:
    """{backbone: model URI} of the source stage; a clear error for a backbone it lacks."""
    ref = ctx.upstream.get("source", {})
    models = ref.get("models", {})
    missing = [b for b in labels if b not in models]
    if missing:
        where = ref.get("source", "the pipeline's source stage")
        raise ValueError(
            f"no source model for backbone(s) {missing} (from {where}; it has "
            f"{sorted(models) or 'none'}): run the source stage first (`adaptflow run --stage "
            "source`, or the whole pipeline) with these transfer.backbones"
        )
    return {b: models[b] for b in labels}


def check_architecture(model, bb, in_chans: int, uri: str, label: str) -> None:
    """The source model must be the network `transfer.backbones.<label>` describes (a stage run
    alone takes the registry's champion, which may predate a change of the backbone config):
    same parameter names and shapes outside the classifier, else a clear error."""
    from adaptflow.stages.source import new_backbone

    expected = new_backbone(bb, 2, in_chans)
    prefix = next(n for n, m in expected.named_modules() if m is expected.get_classifier())

    def shapes(m):
        return {
            n: tuple(t.shape) for n, t in m.state_dict().items() if not n.startswith(prefix + ".")
        }

    theirs, ours = shapes(model), shapes(expected)
    if theirs != ours:
        diff = sorted(set(theirs.items()) ^ set(ours.items()))[:3]
        raise ValueError(
            f"source model {uri} for backbone {label!r} is not the network "
            f"transfer.backbones.{label} describes ({bb.arch} {bb.kwargs}); first differences: "
            f"{diff}. Re-run the source stage with these backbones (`adaptflow run --stage "
            "source`, or the whole pipeline)"
        )


def extract(model, split, device, max_test: int | None) -> tuple[dict[str, np.ndarray], float]:
    """Frozen features of the whole training split and the (capped) test split, and the seconds
    it took."""
    from adaptflow.models.backbones import embed

    n_test = test_size(split, max_test)
    t0 = time.perf_counter()
    f_train = embed(model, split.x_train, device)
    f_test = embed(model, split.x_test[:n_test], device)
    seconds = time.perf_counter() - t0
    arrays = {
        "f_train": f_train,
        "y_train": split.y_train,
        "f_test": f_test,
        "y_test": split.y_test[:n_test],
    }
    return arrays, seconds


def run(params, ctx: StageContext, data: dict[str, Prepared]) -> StageOutcome:
    from sklearn.manifold import TSNE

    from adaptflow.methods.transfer import accuracy, fit_logreg, train_head
    from adaptflow.tracking import plots, runs
    from adaptflow.tracking.models import load_torch_model

    cfg = params.features
    uris = source_models(ctx, list(params.transfer.backbones))
    summary: dict[str, float] = {}
    rows = []
    stage_run = runs.active_run_id()  # the features artifacts live here: finetune reads them
    for dataset in cfg.datasets:  # the baseline the features must beat: pixels
        split = data[dataset].split
        n_test = test_size(split, cfg.max_test)
        t0 = time.perf_counter()
        pix = fit_logreg(
            split.x_train.reshape(len(split.x_train), -1),
            split.y_train,
            C=cfg.logreg_c,
            seed=params.seed,
        )
        fit_s = time.perf_counter() - t0
        acc = float(
            (pix.predict(split.x_test[:n_test].reshape(n_test, -1)) == split.y_test[:n_test]).mean()
        )
        summary[f"features/pixels/{dataset}/logreg_test_acc"] = acc
        rows.append(
            ("pixels", dataset, int(np.prod(split.x_train.shape[1:])), 0.0, None, acc, fit_s)
        )
    for label, uri in uris.items():
        model = load_torch_model(uri, f"source model of backbone {label!r}")
        bb = params.transfer.backbones[label]
        check_architecture(model, bb, data[cfg.datasets[0]].split.x_train.shape[1], uri, label)
        tsne = {}
        with runs.run(f"features/{label}", tags={"adaptflow.backbone": label}):
            runs.log_params({"backbone": label, "source_model": uri})
            for dataset in cfg.datasets:
                split = data[dataset].split
                arrays, extract_s = extract(model, split, ctx.device, cfg.max_test)
                arrays["digest"] = np.array(data[dataset].digest)
                arrays["extract_seconds"] = np.array(extract_s)
                arrays["source_model"] = np.array(uri)  # finetune reuses them for this model only
                runs.log_arrays(arrays, f"features/{label}/{dataset}.npz", stage_run)
                f_tr, y_tr, f_te, y_te = (
                    arrays[k] for k in ("f_train", "y_train", "f_test", "y_test")
                )
                head, history = train_head(
                    f_tr,
                    y_tr,
                    split.num_classes,
                    epochs=cfg.head_epochs,
                    lr=cfg.head_lr,
                    batch_size=cfg.head_batch_size,
                    weight_decay=cfg.head_weight_decay,
                    seed=params.seed,
                    device=ctx.device,
                    progress=ctx.progress,
                )
                linear_acc = accuracy(head, f_te, y_te, ctx.device)
                t0 = time.perf_counter()
                logreg = fit_logreg(f_tr, y_tr, C=cfg.logreg_c, seed=params.seed)
                logreg_s = time.perf_counter() - t0
                logreg_acc = float((logreg.predict(f_te) == y_te).mean())
                m = {
                    "linear_test_acc": linear_acc,
                    "logreg_test_acc": logreg_acc,
                    "extract_seconds": extract_s,
                    "linear_fit_seconds": history.train_seconds,
                    "logreg_fit_seconds": logreg_s,
                    "dim": float(f_tr.shape[1]),
                }
                runs.log_metrics({f"features/{dataset}/{k}": v for k, v in m.items()})
                summary |= {f"features/{label}/{dataset}/{k}": v for k, v in m.items()}
                rows.append(
                    (label, dataset, f_tr.shape[1], extract_s, linear_acc, logreg_acc, logreg_s)
                )
                if cfg.tsne_points:
                    n = min(cfg.tsne_points, len(f_te))
                    xy = TSNE(
                        2, init="pca", random_state=params.seed, perplexity=min(30, n - 1)
                    ).fit_transform(f_te[:n])
                    tsne[dataset] = (xy, y_te[:n])
        for dataset, (xy, y) in tsne.items():
            runs.log_figure(
                plots.embeddings({f"{label} on {dataset}": xy}, y, "t-SNE of frozen test features"),
                f"features/{label}_{dataset}_tsne.png",
            )
    accs = [v for k, v in summary.items() if k.endswith("logreg_test_acc") and "/pixels/" not in k]
    summary["features/logreg_test_acc_min"] = min(accs)
    summary = {k: float(v) for k, v in summary.items() if math.isfinite(v)}
    runs.log_metrics(summary)
    text = report(rows, cfg)
    runs.log_text(text, "features/report.md")
    if ctx.parent_run_id:
        runs.log_text_to(ctx.parent_run_id, text, "features/report.md")
    return StageOutcome(metrics=summary)


def report(rows, cfg) -> str:
    lines = [
        "# Feature extraction: frozen source backbones",
        "",
        "Every training label of each dataset; linear head: "
        f"{cfg.head_epochs} epochs, Adam lr {cfg.head_lr:g}, last epoch kept; logistic "
        f"regression: standardised features, C = {cfg.logreg_c:g}. `pixels`: logistic "
        "regression on the raw pixels, the baseline the features must beat. Test accuracy.",
        "",
        "| features | dataset | dim | extract s | linear head | logistic regression | logreg fit s |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, dataset, dim, extract_s, linear, logreg, fit_s in rows:
        lin = "–" if linear is None else f"{linear:.4f}"
        lines.append(
            f"| {label} | {dataset} | {dim} | {extract_s:.1f} | {lin} | {logreg:.4f} | {fit_s:.1f} |"
        )
    return "\n".join(lines) + "\n"


STAGE = STAGES.register("features")(
    StageSpec(
        name="features",
        datasets=lambda p: list(p.features.datasets),
        run=run,
        depends_on=("source",),
        headline=("features/logreg_test_acc_min",),
        selection=SELECTION,
        shared_params=("transfer.backbones",),
    )
)
