"""Stage `ae`: autoencoder-family methods vs the PCA baseline at the same code size.

Each method gets a nested run under the stage run; the stage run holds the comparison table,
the reconstruction grid and the loss curves, and `ae/test_mse_<method>` for every method.
"""

from __future__ import annotations

import numpy as np
import torch

from adaptflow.data import Prepared
from adaptflow.losses.reconstruction import bce, mse
from adaptflow.methods.ae import AE_METHODS
from adaptflow.methods.ae.base import FitContext
from adaptflow.stages.base import STAGES, StageContext, StageOutcome, StageSpec
from adaptflow.training import seed_everything


def split_train_val(x: np.ndarray, val_fraction: float, max_train: int | None, seed: int):
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))
    n_val = max(1, int(round(len(x) * val_fraction)))
    val, train = idx[:n_val], idx[n_val:]
    if max_train is not None:
        train = train[:max_train]
        val = val[: max(1, int(round(len(train) * val_fraction)))]
    return x[train], x[val]


def reconstruction_metrics(x_hat: np.ndarray, x: np.ndarray) -> dict[str, float]:
    a, b = torch.from_numpy(x_hat), torch.from_numpy(x)
    return {"mse": mse(a, b).item(), "bce": bce(a, b).item()}


def comparison_table(rows: dict[str, dict[str, float]], code_size: int) -> str:
    keys = ["test_mse", "test_bce", "train_seconds"]
    lines = [
        f"# ae: reconstruction at code size {code_size} (test split)",
        "",
        "| method | " + " | ".join(keys) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    for name, m in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{m[k]:.5f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def run(params, ctx: StageContext, data: dict[str, Prepared]) -> StageOutcome:
    from adaptflow.tracking import plots, runs
    from adaptflow.tracking.models import log_torch_model

    cfg = params.ae
    split = data[cfg.dataset].split
    if split.x_train.ndim != 4:
        raise ValueError(
            f"ae.dataset {cfg.dataset!r} holds sequences, not images; pick an image source"
        )
    x_tr, x_val = split_train_val(split.x_train, cfg.val_fraction, cfg.max_train, params.seed)
    x_te = split.x_test
    shape = x_tr.shape[1:]
    results: dict[str, dict[str, float]] = {}
    recon_rows = {"input": x_te[:10]}
    curves: dict[str, list[float]] = {}
    outcome = StageOutcome(model_name=f"adaptflow-{STAGE.name}")
    for name in cfg.methods:
        cls = AE_METHODS.get(name)
        options = cls.Config.model_validate(cfg.options.get(name, {}))
        seed_everything(params.seed)
        method = cls(shape, cfg.hidden, cfg.code_size, options)
        with runs.run(f"ae/{name}", tags={"adaptflow.method": name}):
            runs.log_params({"method": name, **options.model_dump(mode="json")})

            def on_epoch(epoch: int, m: dict[str, float]) -> None:
                runs.log_metrics({f"ae/{k}": v for k, v in m.items()}, step=epoch)

            fit_ctx = FitContext(cfg, ctx.device, params.seed, ctx.progress, on_epoch)
            history = method.fit(x_tr, x_val, fit_ctx)
            rec = reconstruction_metrics(method.reconstruct_np(x_te), x_te)
            m = {
                "test_mse": rec["mse"],
                "test_bce": rec["bce"],
                "train_seconds": history.seconds if history else 0.0,
            }
            if history:
                m["best_epoch"] = history.best_epoch
                curves[f"{name} train"] = history.series("loss")
                curves[f"{name} val"] = history.series("val_loss")
            runs.log_metrics({f"ae/{k}": v for k, v in m.items()})
            if method.is_torch and name == cfg.register_method:
                _, outcome.model_version = log_torch_model(method, x_te[:4], outcome.model_name)
        results[name] = m
        recon_rows[name] = method.reconstruct_np(x_te[:10])

    summary = {f"ae/test_mse_{n}": r["test_mse"] for n, r in results.items()}
    summary |= {f"ae/test_bce_{n}": r["test_bce"] for n, r in results.items()}
    summary["ae/test_mse"] = results[cfg.register_method]["test_mse"]
    summary["ae/test_bce"] = results[cfg.register_method]["test_bce"]
    if "pca" in results:
        summary[f"ae/test_mse_ratio_{cfg.register_method}_vs_pca"] = (
            results[cfg.register_method]["test_mse"] / results["pca"]["test_mse"]
        )
    runs.log_metrics(summary)
    runs.log_text(comparison_table(results, cfg.code_size), "ae/comparison.md")
    runs.log_figure(
        plots.image_rows(recon_rows, title=f"test reconstructions, code size {cfg.code_size}"),
        "ae/reconstructions.png",
    )
    if curves:
        runs.log_figure(plots.curves(curves, ylabel="loss"), "ae/loss_curves.png")
    outcome.metrics = summary
    return outcome


STAGE = STAGES.register("ae")(
    StageSpec(
        name="ae", datasets=lambda p: [p.ae.dataset], run=run, registered_model="adaptflow-ae"
    )
)
