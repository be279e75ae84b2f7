"""Stage `ae`: the autoencoder family (seed Q1-Q2) side by side, each claim decided over seeds.

Per seed, every (method, arch) pair gets a nested run `ae/<label>-s<seed>` with its metrics:
reconstruction (MSE, BCE), PSNR of the output for Gaussian- and mask-corrupted test images over a
grid of noise levels, linear-probe and kNN accuracy of the codes, per-unit activation of sparse
codes, -ELBO and importance-weighted -log p(x) (VAE), generated images scored by a reference
digit classifier (VAE prior samples; the other decoders fed Gaussian codes fitted to their
training codes), classifier confidence along latent interpolations, and (first seed only) the
AUROC of reconstruction error for a digit held out of training.
Every claim compares a method with its baseline over the seeds (`paired_verdict`); the stage run
holds the comparison tables (mean ± std over seeds), the verdicts and the figures (first seed).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from adaptflow.data import Prepared
from adaptflow.evaluation import (
    DEAD_ACTIVATION,
    anomaly_auroc,
    different_class_pairs,
    fit_gaussian,
    generation_scores,
    knn_accuracy,
    linear_probe_accuracy,
    psnr,
    sample_gaussian,
    unit_activation_stats,
)
from adaptflow.evaluation.verdicts import FAILS, FEW_SEEDS, all_of, paired_verdict
from adaptflow.losses.noise import corrupt
from adaptflow.losses.reconstruction import bce, mse
from adaptflow.methods.ae import AE_METHODS
from adaptflow.methods.ae.base import FitContext
from adaptflow.models.digit_classifier import DigitClassifier
from adaptflow.models.factory import NetSpec
from adaptflow.stages.base import (
    STAGES,
    Gate,
    StageContext,
    StageOutcome,
    StageSpec,
    claims_table,
    log_claims,
    split_fingerprint,
    split_train_val,
)
from adaptflow.sweep import sweep as run_units
from adaptflow.training import seed_everything

SHOWN = 10  # images per row in the figures
SPARSE_BASELINE = "sparse_lam0"  # the sparse AE with lambda = 0: same sigmoid code, no penalty


def reconstruction_metrics(x_hat: np.ndarray, x: np.ndarray) -> dict[str, float]:
    a, b = torch.from_numpy(x_hat), torch.from_numpy(x)
    return {"mse": mse(a, b).item(), "bce": bce(a, b).item()}


def noise_key(kind: str, level: float) -> str:
    return f"{kind}_{level:g}"


def noise_grid(cfg) -> list[tuple[str, float]]:
    return [("gaussian", s) for s in cfg.eval_sigmas] + [("masking", p) for p in cfg.eval_mask_ps]


@dataclass
class EvalData:
    """Everything a method is evaluated on, corrupted/binarised once so all methods and seeds
    share it. The train/validation split and the test corruption are fixed by the stage seed;
    the seeds in `ae.seeds` vary initialisation and batch order."""

    x_tr: np.ndarray
    y_tr: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_te: np.ndarray
    y_te: np.ndarray
    noisy: dict[str, np.ndarray] = field(default_factory=dict)
    x_bin: np.ndarray | None = None
    val_idx: np.ndarray | None = None
    pairs: tuple[np.ndarray, np.ndarray] | None = None  # test indices of different classes

    @classmethod
    def build(cls, split, cfg, seed: int) -> EvalData:
        tr, val = split_train_val(len(split.x_train), cfg.val_fraction, cfg.max_train, seed)
        n_te = cfg.max_test or len(split.x_test)
        x_te, y_te = split.x_test[:n_te], split.y_test[:n_te]
        g = torch.Generator().manual_seed(seed)
        t = torch.from_numpy(x_te)
        noisy = {noise_key(k, lv): corrupt(t, k, lv, g).numpy() for k, lv in noise_grid(cfg)}
        # stochastic binarisation (Salakhutdinov & Murray 2008), fixed by the seed
        x_bin = (
            (torch.rand(t[: cfg.iw_images].shape, generator=g) < t[: cfg.iw_images]).float().numpy()
        )
        x_tr, y_tr = split.x_train[tr], split.y_train[tr]
        x_val, y_val = split.x_train[val], split.y_train[val]
        pairs = different_class_pairs(y_te, cfg.interp_pairs, seed)
        return cls(x_tr, y_tr, x_val, y_val, x_te, y_te, noisy, x_bin, np.sort(val), pairs)


@torch.no_grad()
def decode_np(method, z: np.ndarray) -> np.ndarray:
    device = next(method.parameters()).device
    return torch.sigmoid(method.decode_logits(torch.from_numpy(z).to(device))).float().cpu().numpy()


def generated_images(method, z_train: np.ndarray, n: int, seed: int) -> np.ndarray:
    """VAE: decoded draws from its prior N(0, I). Any other decoder: decoded draws from a Gaussian
    fitted (mean + covariance) to its training codes, the fairest prior a plain AE has."""
    if getattr(method, "generative", False):
        return method.sample(n, torch.Generator().manual_seed(seed)).float().cpu().numpy()
    mean, cov = fit_gaussian(z_train)
    return decode_np(method, sample_gaussian(mean, cov, n, seed))


def interpolation_confidence(method, z_te: np.ndarray, pairs, steps: int, classifier) -> float:
    """Mean classifier confidence on decoded points strictly between the codes of two test images
    of different classes (a smooth latent space decodes digits all the way, not blends)."""
    a, b = pairs
    w = np.linspace(0, 1, steps, dtype=np.float32)[1:-1].reshape(-1, 1, 1)
    path = (1 - w) * z_te[a][None] + w * z_te[b][None]  # (steps-2, pairs, d)
    x = decode_np(method, path.reshape(-1, z_te.shape[1]))
    return float(classifier.predict_proba(x).max(1).mean())


def validation_metrics(method, d: EvalData) -> dict[str, float]:
    """Validation-split MSE (every method) and, for the sparse AE, its per-unit activation: what
    the gate and the λ sweep read, so no choice is ever made on test data."""
    m = {"val_mse": reconstruction_metrics(method.reconstruct_np(d.x_val), d.x_val)["mse"]}
    if method.name == "sparse":
        stats = unit_activation_stats(method.encode_np(d.x_val), method.options.rho)
        m |= {f"val_{k}": v for k, v in stats.items()} | {"lam": method.options.lam}
    return m


def evaluate(method, d: EvalData, cfg, seed: int, classifier=None) -> tuple[dict[str, float], dict]:
    """Metrics (validation: `validation_metrics`; test: the rest) and the pictures of one
    fitted method."""
    x_hat = method.reconstruct_np(d.x_te)
    rec = reconstruction_metrics(x_hat, d.x_te)
    m = validation_metrics(method, d) | {"test_mse": rec["mse"], "test_bce": rec["bce"]}
    pictures = {"recon": x_hat[:SHOWN], "denoised": {}}
    for key, x_noisy in d.noisy.items():
        out = method.reconstruct_np(x_noisy)
        m[f"test_psnr_{key}"] = psnr(out, d.x_te)
        pictures["denoised"][key] = out[:SHOWN]
    z_tr, z_te = method.encode_np(d.x_tr), method.encode_np(d.x_te)
    m["test_linear_probe_acc"] = linear_probe_accuracy(z_tr, d.y_tr, z_te, d.y_te, seed)
    m["test_knn_acc"] = knn_accuracy(z_tr, d.y_tr, z_te, d.y_te)
    pictures["codes"] = z_te
    if method.name == "sparse":
        stats = unit_activation_stats(z_te, method.options.rho)
        m |= {f"test_{k}": v for k, v in stats.items()}
        m["rho"], m["lam"] = method.options.rho, method.options.lam
    if getattr(method, "generative", False):
        device = next(method.parameters()).device
        x_bin = torch.from_numpy(d.x_bin).to(device)
        torch.manual_seed(seed)
        m["test_neg_elbo"] = float(method.negative_elbo(x_bin).mean())
        m["test_nll_iw"] = float(
            torch.cat([method.nll(b, cfg.iw_samples) for b in x_bin.split(50)]).mean()
        )
    if classifier is not None and method.is_torch:
        samples = generated_images(method, z_tr, cfg.gen_samples, seed)
        gen = generation_scores(classifier.predict_proba(samples))
        m |= {f"gen_{k}": v for k, v in gen.items()}
        m["test_interp_confidence"] = interpolation_confidence(
            method, z_te, d.pairs, cfg.interp_steps, classifier
        )
        pictures["samples"] = samples[:64]
        pictures["interpolation"] = interpolate(method, d, pairs=4, steps=SHOWN)
    return m, pictures


@torch.no_grad()
def interpolate(method, d: EvalData, pairs: int, steps: int) -> dict[str, np.ndarray]:
    """Decode straight lines between the codes of test images of distinct classes (figure)."""
    a, b = d.pairs
    z = method.encode_np(d.x_te[np.r_[a[:pairs], b[:pairs]]])
    w = np.linspace(0, 1, steps, dtype=np.float32).reshape(-1, 1)
    return {
        f"{d.y_te[a[i]]} to {d.y_te[b[i]]}": decode_np(method, (1 - w) * z[i] + w * z[pairs + i])
        for i in range(pairs)
    }


def anomaly_score_auroc(name, spec, options, d: EvalData, cfg, ctx, seed: int, digit: int) -> float:
    """Train a fresh copy without `digit`; score test images by reconstruction MSE."""
    seed_everything(seed)
    method = AE_METHODS.get(name)(spec, options)
    keep_tr, keep_val = d.y_tr != digit, d.y_val != digit
    fit_ctx = FitContext(cfg, ctx.device, seed, ctx.progress, desc=f"{method.name} w/o {digit}")
    method.fit(d.x_tr[keep_tr], d.x_val[keep_val], fit_ctx)
    x_hat = method.reconstruct_np(d.x_te)
    scores = ((x_hat - d.x_te) ** 2).reshape(len(d.x_te), -1).mean(1)
    return anomaly_auroc(scores, d.y_te == digit)


def train_classifier(d: EvalData, cfg, device: torch.device, seed: int):
    """The reference classifier: training split, selected on the validation split."""
    from adaptflow.config import TrainSettings

    seed_everything(seed)
    clf = DigitClassifier(tuple(d.x_tr.shape[1:]), int(d.y_tr.max()) + 1)
    settings = TrainSettings(epochs=cfg.classifier_epochs, batch_size=128, lr=1e-3, patience=3)
    clf.fit(d.x_tr, d.y_tr, d.x_val, d.y_val, settings, device, seed)
    return clf, clf.accuracy(d.x_te, d.y_te)


# ---------------------------------------------------------------- tables
TABLE_COLUMNS = [  # (metric, header, decimals)
    ("test_mse", "MSE", 4),
    ("test_bce", "BCE", 4),
    ("test_linear_probe_acc", "linear probe", 3),
    ("test_knn_acc", "kNN", 3),
    ("test_mean_activation", "mean act.", 3),
    ("test_unit_band_fraction", "units in [ρ/2, 2ρ]", 2),
    ("test_dead_units", "dead units", 1),
    ("test_neg_elbo", "-ELBO (nats)", 1),
    ("test_nll_iw", "-log p(x) IW", 1),
    ("gen_confidence", "gen. conf.", 3),
    ("gen_class_entropy", "gen. class entropy", 3),
    ("test_interp_confidence", "interp. conf.", 3),
    ("test_anomaly_auroc", "anomaly AUROC", 3),
    ("train_seconds", "train s", 1),
]


def seed_values(per_seed: dict[int, dict[str, float]], key: str) -> list[float]:
    return [m[key] for m in per_seed.values() if key in m]


def mean_std(values: list[float], digits: int) -> str:
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{np.mean(values):.{digits}f} ± {np.std(values, ddof=1):.{digits}f}"


def comparison(results: dict[str, dict[int, dict[str, float]]]):
    """Methods × metrics, each cell mean ± std over seeds (sample std)."""
    import pandas as pd

    rows = {
        label: {h: mean_std(seed_values(r, k), dg) for k, h, dg in TABLE_COLUMNS}
        for label, r in results.items()
    }
    df = pd.DataFrame.from_dict(rows, orient="index")
    return df[[h for _, h, _ in TABLE_COLUMNS if (df[h] != "–").any()]]


def denoising_table(results, baseline: dict[str, float], cfg):
    """PSNR (dB) of each method's output on the noise grid; the noisy input's own PSNR first."""
    import pandas as pd

    train_key = _dae_training_key(cfg)
    head = {
        noise_key(k, lv): f"{'σ' if k == 'gaussian' else 'p'}={lv:g} {k[:5]}"
        + (" (DAE's training level)" if noise_key(k, lv) == train_key else "")
        for k, lv in noise_grid(cfg)
    }
    rows = {"noisy input": {h: f"{baseline[k]:.2f}" for k, h in head.items()}}
    for label, r in results.items():
        rows[label] = {h: mean_std(seed_values(r, f"test_psnr_{k}"), 2) for k, h in head.items()}
    return pd.DataFrame.from_dict(rows, orient="index")


def _dae_training_key(cfg) -> str | None:
    if "denoising" not in cfg.methods:
        return None
    opts = AE_METHODS.get("denoising").Config.model_validate(cfg.options.get("denoising", {}))
    return noise_key(opts.noise, opts.sigma if opts.noise == "gaussian" else opts.p)


# ---------------------------------------------------------------- verdicts
def _paired(results, method: str, baseline: str, key: str, higher: bool, scale=1.0):
    a, b = results[method], results[baseline]
    seeds = [s for s in a if s in b and key in a[s] and key in b[s]]
    return paired_verdict(
        [scale * a[s][key] for s in seeds], [b[s][key] for s in seeds], higher_is_better=higher
    )


def verdicts(results: dict[str, dict[int, dict[str, float]]], cfg) -> list[tuple[str, str, str]]:
    """The seed's AE claims, each a paired comparison with its baseline over the seeds."""
    out = []
    arch = cfg.archs[0]
    lab = {n: n if n == "pca" else f"{n}-{arch}" for n in ("ae", "pca", "denoising", "vae")}
    lab |= {"sparse": f"sparse-{arch}", "sparse0": f"{SPARSE_BASELINE}-{arch}"}
    has = {n: label in results for n, label in lab.items()}
    mean = lambda label, k: float(np.mean(seed_values(results[label], k)))  # noqa: E731
    if has["ae"] and has["pca"]:
        r = _paired(results, lab["ae"], lab["pca"], "test_mse", higher=False)
        out.append(
            (
                "a non-linear bottleneck beats PCA at the same code size (Q1)",
                f"MSE ae {mean(lab['ae'], 'test_mse'):.4f} vs pca {mean(lab['pca'], 'test_mse'):.4f};"
                f" gain {r.describe(digits=4)}",
                r.verdict,
            )
        )
    if has["ae"] and has["denoising"]:
        train_key = _dae_training_key(cfg)
        for kind, levels in (("gaussian", cfg.eval_sigmas), ("masking", cfg.eval_mask_ps)):
            parts, vs = [], []
            for lv in levels:
                k = noise_key(kind, lv)
                r = _paired(results, lab["denoising"], lab["ae"], f"test_psnr_{k}", higher=True)
                tag = " (trained)" if k == train_key else ""
                parts.append(f"{lv:g}{tag}: {r.describe('dB')} {r.verdict}")
                vs.append(r.verdict)
            sym = "σ" if kind == "gaussian" else "p"
            out.append(
                (
                    f"the denoising AE restores clean digits from {kind}-corrupted input better "
                    f"than the plain AE at every level, trained or not (Q2; {sym} grid)",
                    "PSNR gain: " + "; ".join(parts),
                    all_of(vs),
                )
            )
    if has["sparse"]:
        # absolute, not relative to λ = 0 (whose units sit near 0.5: beating it is free): the
        # band fraction must exceed the stated floor (paired against it over seeds) and no unit
        # may be dead on any seed
        rho = results[lab["sparse"]][next(iter(results[lab["sparse"]]))]["rho"]
        band = seed_values(results[lab["sparse"]], "test_unit_band_fraction")
        dead = seed_values(results[lab["sparse"]], "test_dead_units")
        floor = cfg.sparse_band_floor
        r = paired_verdict(band, [floor] * len(band))
        verdict = FAILS if r.verdict != FEW_SEEDS and any(x > 0 for x in dead) else r.verdict
        context = (
            f"; λ = 0 for context: {mean(lab['sparse0'], 'test_unit_band_fraction'):.2f} in band, "
            f"{mean(lab['sparse0'], 'test_dead_units'):.1f} dead"
            if has["sparse0"]
            else ""
        )
        out.append(
            (
                "the sparse AE's code units fire near rho: the share of units whose mean "
                f"activation lies in [ρ/2, 2ρ] = [{rho / 2:g}, {2 * rho:g}] exceeds "
                f"{floor:g}, and no unit is dead (Q2)",
                f"units in band {np.mean(band):.2f} vs floor {floor:g} ({r.describe()}); "
                f"dead units (mean < {DEAD_ACTIVATION:g}) per seed "
                f"{[int(x) for x in dead]}" + context,
                verdict,
            )
        )
        if has["ae"]:
            f = cfg.sparse_mse_factor
            r = _paired(results, lab["ae"], lab["sparse"], "test_mse", higher=True, scale=f)
            out.append(
                (
                    f"sparsity costs little: the sparse AE's MSE is within ×{f:g} of the plain "
                    "AE's (factor fixed on the validation λ sweep)",
                    f"MSE sparse {mean(lab['sparse'], 'test_mse'):.4f} vs ae "
                    f"{mean(lab['ae'], 'test_mse'):.4f}; {f:g}·ae − sparse "
                    f"{r.describe(digits=4)}",
                    r.verdict,
                )
            )
    if has["vae"] and has["ae"]:
        for key, claim in (
            (
                "gen_confidence",
                "generation: the VAE's prior samples are recognisable digits (reference "
                "classifier's confidence), more than a plain AE decoding Gaussian-fitted codes (Q2)",
            ),
            (
                "gen_class_entropy",
                "generation: the VAE's prior samples cover the classes (entropy of the "
                "predicted-class histogram / log K), more than the plain AE's (Q2)",
            ),
            (
                "test_interp_confidence",
                "a smooth latent space: decoded interpolations between test digits of different "
                "classes stay recognisable (classifier confidence), more than the plain AE's (Q2)",
            ),
        ):
            r = _paired(results, lab["vae"], lab["ae"], key, higher=True)
            out.append(
                (
                    claim,
                    f"vae {mean(lab['vae'], key):.3f} vs ae {mean(lab['ae'], key):.3f} "
                    f"({r.describe(digits=3)})",
                    r.verdict,
                )
            )
    return out


def sweep_admissible(p: dict, ae_val_mse: float | None, cfg) -> bool:
    """A λ of the validation sweep fits the claims: band share above the floor, no dead unit,
    validation MSE within `sparse_mse_factor` of the plain AE's."""
    return (
        p["val_unit_band_fraction"] > cfg.sparse_band_floor
        and p["val_dead_units"] == 0
        and ae_val_mse is not None
        and p["val_mse"] <= cfg.sparse_mse_factor * ae_val_mse
    )


def sweep_table(sweep: list[dict], ae_val_mse: float | None, cfg):
    """The sparse λ sweep on the VALIDATION split (first seed): what fixed λ and the MSE factor."""
    import pandas as pd

    rows = {
        f"λ={p['lam']:g}": {
            "val MSE": f"{p['val_mse']:.4f}",
            "÷ plain AE val MSE": f"{p['val_mse'] / ae_val_mse:.2f}" if ae_val_mse else "–",
            "val mean act.": f"{p['val_mean_activation']:.3f}",
            "units in [ρ/2, 2ρ]": f"{p['val_unit_band_fraction']:.2f}",
            "dead units": f"{p['val_dead_units']:.0f}",
            f"fits (> {cfg.sparse_band_floor:g}, 0 dead, ≤ ×{cfg.sparse_mse_factor:g})": (
                "yes" if sweep_admissible(p, ae_val_mse, cfg) else "no"
            ),
        }
        for p in sweep
    }
    return pd.DataFrame.from_dict(rows, orient="index")


def report(df, noise_df, claims, cfg, dataset: str, clf_acc: float | None, sweep_df=None) -> str:
    vae_opts = AE_METHODS.get("vae").Config.model_validate(cfg.options.get("vae", {}))
    protocol = (
        "trained on dynamically binarised images (x ~ Bernoulli(pixels), re-sampled every batch)"
        if vae_opts.binarize == "dynamic"
        else "trained on grey levels with a Bernoulli likelihood (not the literature's protocol)"
    )
    lines = [
        f"# ae: the autoencoder family on `{dataset}` (code size {cfg.code_size}, test split)",
        "",
        f"Seeds {list(cfg.seeds)}: every cell is mean ± std over seeds (one value: one seed).",
        "",
        df.to_markdown(missingval="–"),
        "",
        "## Denoising: PSNR (dB) of each method's output against the clean test image",
        "",
        noise_df.to_markdown(missingval="–"),
        "",
        f"-ELBO and -log p(x) (k={cfg.iw_samples} importance samples) in nats on "
        f"{cfg.iw_images} stochastically binarised test images; the VAE was {protocol}. "
        "Reference: MLP VAE on full binarised MNIST ~89-90 nats (60,000 training images).",
        "Generation and interpolation are scored by a reference digit classifier trained in the "
        "stage on the training split (selected on validation)"
        + (f", test accuracy {clf_acc:.3f}" if clf_acc is not None else "")
        + f": {cfg.gen_samples} generated images per method (VAE: prior N(0, I); others: "
        "Gaussian fitted to their training codes), "
        f"{cfg.interp_pairs} test pairs of different classes × {cfg.interp_steps - 2} "
        "interior interpolation points.",
        f"Sparse: dead unit = mean test activation < {DEAD_ACTIVATION:g}; "
        + (
            f"`{SPARSE_BASELINE}` is the sparse AE with λ = 0 (same sigmoid code, no penalty), "
            "shown as context only; "
            if cfg.sparse_baseline
            else ""
        )
        + f"the 'fire near ρ' claim is absolute (band share > "
        f"{cfg.sparse_band_floor:g} over seeds, no dead unit on any seed).",
        f"Anomaly AUROC (first seed; {', '.join(cfg.anomaly_methods)}): a copy trained without "
        f"digit {cfg.anomaly_digit}, test images scored by reconstruction MSE.",
        "Verdicts: paired differences over seeds; holds if the mean gain exceeds the half-width "
        "of its 95 % t confidence interval (t(0.975, n-1) × SE: 4.30 SE with 3 seeds), does not "
        "hold if it is below minus that half-width, else within noise; one seed: not enough "
        "seeds. Shown as gain ± half-width (95 % CI, n seeds).",
        "",
        *claims_table(claims),
    ]
    if sweep_df is not None and len(sweep_df):
        lines += [
            "",
            "## Sparse λ sweep on the validation split (first seed, first arch)",
            "",
            sweep_df.to_markdown(),
            "",
            "λ and the MSE factor of the 'sparsity costs little' claim are fixed from this "
            "validation sweep (the configured λ = "
            f"{AE_METHODS.get('sparse').Config.model_validate(cfg.options.get('sparse', {})).lam:g}"
            " must be a 'yes' row); the test numbers above are reported, never used to choose.",
        ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the stage
def _variants(name: str, options, cfg):
    """(label stem, options) to train for a method: the sparse AE also trains its λ = 0 baseline
    when `ae.sparse_baseline` asks for it."""
    yield name, options
    if name == "sparse" and cfg.sparse_baseline:
        yield SPARSE_BASELINE, options.model_copy(update={"lam": 0.0})


def _spec(cfg, shape, arch: str) -> NetSpec:
    return NetSpec(shape, arch, tuple(cfg.hidden), tuple(cfg.conv_channels), cfg.code_size)


def _fit_one(cls, spec, options, d: EvalData, cfg, ctx, seed: int, label: str, runs):
    seed_everything(seed)
    method = cls(spec, options)

    def on_epoch(epoch: int, m: dict[str, float]) -> None:
        runs.log_metrics({f"ae/{k}": v for k, v in m.items()}, step=epoch)

    t0 = time.perf_counter()
    history = method.fit(
        d.x_tr, d.x_val, FitContext(cfg, ctx.device, seed, ctx.progress, on_epoch, desc=label)
    )
    return method, history, time.perf_counter() - t0


def _label(name: str, arch: str, stem: str) -> str:
    return f"{stem}-{arch}" if AE_METHODS.get(name).is_torch else stem


@dataclass
class FitResult:
    metrics: dict[str, float]
    pics: dict | None = None  # figures' inputs (first seed, the methods not the λ = 0 baseline)
    curves: dict[str, list[float]] | None = None  # first seed's train/val loss
    model_uri: str | None = None  # the registered model's (register_method, first arch and seed)


def fit_unit(seed, name, arch, stem, options, cfg, d: EvalData, clf, shape, ctx) -> FitResult:
    """One sweep unit: one method (arch, variant) at one seed, trained and evaluated in its own
    nested run."""
    from adaptflow.tracking import runs
    from adaptflow.tracking.models import log_torch_model

    cls = AE_METHODS.get(name)
    spec = _spec(cfg, shape, arch if cls.is_torch else "mlp")
    label, first = _label(name, arch, stem), cfg.seeds[0]
    out = FitResult({})
    tags = {
        "adaptflow.method": stem,  # sparse_lam0 (the λ = 0 baseline) apart
        "adaptflow.seed": str(seed),
    } | ({"adaptflow.arch": arch} if cls.is_torch else {})
    with runs.run(f"ae/{label}-s{seed}", tags=tags):
        runs.log_params(
            {"method": name, "arch": arch, "seed": seed} | options.model_dump(mode="json")
        )
        method, history, seconds = _fit_one(cls, spec, options, d, cfg, ctx, seed, label, runs)
        metrics = {"train_seconds": seconds}
        m, p = evaluate(method, d, cfg, seed, clf)
        metrics |= m
        if history:
            metrics["best_epoch"] = history.best_epoch
        if seed == first:
            if stem == name:  # figures: the methods, not the λ = 0 baseline
                out.pics = p
            if history:
                out.curves = {"train": history.series("loss"), "val": history.series("val_loss")}
            if cfg.anomaly_digit is not None and stem == name and name in cfg.anomaly_methods:
                metrics["test_anomaly_auroc"] = anomaly_score_auroc(
                    name, spec, options, d, cfg, ctx, seed, cfg.anomaly_digit
                )
        if (name, arch, seed) == (cfg.register_method, cfg.archs[0], first):
            # the gate compares validation MSE: test data never selects a champion
            metrics["gate_val_mse"] = metrics["val_mse"]
            out.model_uri = log_torch_model(method, d.x_val[:4])
        runs.log_metrics({f"ae/{k}": v for k, v in metrics.items()})
    out.metrics = metrics
    return out


def run(params, ctx: StageContext, data: dict[str, Prepared]) -> StageOutcome:
    from adaptflow.tracking import plots, runs

    cfg = params.ae
    split = data[cfg.dataset].split
    if split.x_train.ndim != 4:
        raise ValueError(
            f"ae.dataset {cfg.dataset!r} holds sequences, not images; pick an image source"
        )
    if cfg.anomaly_digit is not None and cfg.anomaly_digit >= split.num_classes:
        raise ValueError(
            f"ae.anomaly_digit={cfg.anomaly_digit} but {cfg.dataset} has {split.num_classes} classes"
        )
    d = EvalData.build(split, cfg, params.seed)
    shape = tuple(d.x_tr.shape[1:])
    first = cfg.seeds[0]
    clf, clf_acc = train_classifier(d, cfg, ctx.device, first)
    results: dict[str, dict[int, dict[str, float]]] = {}
    pics: dict[str, dict] = {}
    curves: dict[str, dict[str, list[float]]] = {}
    outcome = StageOutcome(model_name=params.model_name("ae"))
    order = [  # every (seed, method, arch, variant) is a sweep unit (concurrent on runner: dask)
        (seed, name, arch, stem, options)
        for seed in cfg.seeds
        for name in cfg.methods
        for arch in (cfg.archs if AE_METHODS.get(name).is_torch else ["-"])
        for stem, options in _variants(
            name, AE_METHODS.get(name).Config.model_validate(cfg.options.get(name, {})), cfg
        )
    ]
    done = run_units(
        [
            functools.partial(fit_unit, seed, name, arch, stem, options, cfg, d, clf, shape)
            for seed, name, arch, stem, options in order
        ],
        ctx,
        [f"ae/{_label(name, arch, stem)}-s{seed}" for seed, name, arch, stem, _ in order],
    )
    for (seed, name, arch, stem, _), unit in zip(order, done, strict=True):
        label = _label(name, arch, stem)
        results.setdefault(label, {})[seed] = unit.metrics
        if unit.pics is not None:
            pics[label] = unit.pics
        if unit.curves is not None:
            curves[label] = unit.curves
        if unit.model_uri is not None:
            outcome.model_uri = unit.model_uri
    sweep = (
        _sparse_sweep(results, d, cfg, ctx, shape, first, runs)
        if "sparse" in cfg.methods and cfg.sparse_lambdas
        else []
    )

    baseline = {k: psnr(v, d.x_te) for k, v in d.noisy.items()}
    summary: dict[str, float] = {}
    for label, per_seed in results.items():
        for k in {k for m in per_seed.values() for k in m}:
            vals = seed_values(per_seed, k)
            summary[f"ae/{label}/{k}"] = float(np.mean(vals))
            if len(vals) > 1:
                summary[f"ae/{label}/{k}_std"] = float(np.std(vals, ddof=1))
    summary |= {f"ae/input/test_psnr_{k}": v for k, v in baseline.items()}
    primary = results[f"{cfg.register_method}-{cfg.archs[0]}"]
    summary["ae/test_mse"] = float(np.mean(seed_values(primary, "test_mse")))
    summary["ae/test_bce"] = float(np.mean(seed_values(primary, "test_bce")))
    summary["ae/gate_val_mse"] = primary[first]["gate_val_mse"]
    summary["ae/classifier_test_acc"] = clf_acc
    claims = verdicts(results, cfg)
    summary["ae/claims_holding"] = sum(v == "holds" for _, _, v in claims)
    runs.log_metrics(summary)

    df, noise_df = comparison(results), denoising_table(results, baseline, cfg)
    ae_val = results.get(f"ae-{cfg.archs[0]}", {}).get(first, {}).get("val_mse")
    sweep_df = sweep_table(sweep, ae_val, cfg) if sweep else None
    text = report(df, noise_df, claims, cfg, cfg.dataset, clf_acc, sweep_df)
    runs.log_text(text, "ae/comparison.md")
    log_claims("ae", claims)
    runs.log_text(df.to_csv(), "ae/comparison.csv")
    runs.log_text(noise_df.to_csv(), "ae/denoising.csv")
    if ctx.parent_run_id:  # the table belongs on the pipeline run too
        runs.log_text_to(ctx.parent_run_id, text, "ae/comparison.md")
    _figures(plots, runs, d, pics, curves, cfg, first)
    runs.log_figure(
        plots.metric_vs_level(_psnr_panels(results, baseline, cfg), "PSNR (dB)"),
        "ae/psnr_vs_noise.png",
    )
    if sweep:
        rho = AE_METHODS.get("sparse").Config.model_validate(cfg.options.get("sparse", {})).rho
        limit = cfg.sparse_mse_factor * ae_val if ae_val else None
        runs.log_figure(plots.sparsity_tradeoff(sweep, rho, limit), "ae/sparse_tradeoff.png")
    outcome.metrics = summary
    outcome.gate_context = {
        "dataset_digest": data[cfg.dataset].digest,
        "input_shape": "x".join(str(s) for s in shape),
        "val_split": split_fingerprint(d.val_idx),
        # the registered model's interface: another code size or arch is "not comparable"
        "model": f"{cfg.register_method}-{cfg.archs[0]}-code{cfg.code_size}",
    }
    return outcome


def _sparse_sweep(results, d: EvalData, cfg, ctx, shape, seed: int, runs) -> list[dict]:
    """VALIDATION MSE vs validation mean activation for each λ of `ae.sparse_lambdas` (first
    seed, first arch), reusing the runs of the configured λ and of the λ = 0 baseline. λ and
    `sparse_mse_factor` are fixed from this sweep; test numbers never enter it."""
    arch = cfg.archs[0]
    cls = AE_METHODS.get("sparse")
    base = cls.Config.model_validate(cfg.options.get("sparse", {}))
    done = {
        r[seed]["lam"]: r[seed]
        for label in (f"sparse-{arch}", f"{SPARSE_BASELINE}-{arch}")
        if seed in (r := results.get(label, {}))
    }
    for lam in sorted({0.0, *cfg.sparse_lambdas}):  # λ = 0 anchors the plot
        if lam in done:
            continue
        options = base.model_copy(update={"lam": float(lam)})
        label = f"sparse_lam{lam:g}-{arch}"
        tags = {
            "adaptflow.method": f"sparse_lam{lam:g}",
            "adaptflow.arch": arch,
            "adaptflow.seed": str(seed),
            "adaptflow.kind": "sweep",  # a validation sweep point, not a compared method
        }
        with runs.run(f"ae/{label}-s{seed}", tags=tags):
            runs.log_params({"method": "sparse", "arch": arch, "seed": seed, "sweep": True})
            method, _, _ = _fit_one(
                cls, _spec(cfg, shape, arch), options, d, cfg, ctx, seed, label, runs
            )
            m = validation_metrics(method, d)
            runs.log_metrics({f"ae/{k}": v for k, v in m.items()})
        done[float(lam)] = m
    return [done[k] for k in sorted(done)]


def _psnr_panels(results, baseline, cfg) -> dict[str, dict[str, tuple]]:
    panels = {}
    for kind, levels in (("gaussian", cfg.eval_sigmas), ("masking", cfg.eval_mask_ps)):
        keys = [noise_key(kind, lv) for lv in levels]
        series = {"noisy input": (list(levels), [baseline[k] for k in keys], [0.0] * len(keys))}
        for label, r in results.items():
            vals = [seed_values(r, f"test_psnr_{k}") for k in keys]
            series[label] = (
                list(levels),
                [float(np.mean(v)) for v in vals],
                [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for v in vals],
            )
        panels[f"{kind} noise ({'σ' if kind == 'gaussian' else 'p'})"] = series
    return panels


def _figures(plots, runs, d: EvalData, pics, curves, cfg, seed: int) -> None:
    rows = {"input": d.x_te[:SHOWN]} | {k: p["recon"] for k, p in pics.items()}
    runs.log_figure(
        plots.image_rows(rows, SHOWN, f"test reconstructions, code size {cfg.code_size}"),
        "ae/reconstructions.png",
    )
    shown = [noise_key("gaussian", cfg.eval_sigmas[-1]), noise_key("masking", cfg.eval_mask_ps[-1])]
    rows = {"clean": d.x_te[:SHOWN]}
    for key in shown:
        rows[key] = d.noisy[key][:SHOWN]
        rows |= {f"{k} | {key}": p["denoised"][key] for k, p in pics.items()}
    runs.log_figure(
        plots.image_rows(rows, SHOWN, "denoising: corrupted input, then each method's output"),
        "ae/denoising.png",
    )
    for label, p in pics.items():
        if "samples" in p and label.split("-")[0] in ("ae", "vae"):
            how = "prior samples" if label.startswith("vae") else "Gaussian-fitted codes decoded"
            runs.log_figure(
                plots.image_grid(p["samples"], 8, f"{label}: {how}"), f"ae/{label}_samples.png"
            )
            runs.log_figure(
                plots.image_rows(p["interpolation"], SHOWN, f"{label}: latent interpolation"),
                f"ae/{label}_interpolation.png",
            )
    if curves:
        runs.log_figure(plots.curve_panels(curves), "ae/loss_curves.png")
    if cfg.tsne_points:
        from sklearn.manifold import TSNE

        n = min(cfg.tsne_points, len(d.x_te))
        xy = {}
        for k, p in pics.items():
            if not (k == "pca" or k.endswith(f"-{cfg.archs[0]}")):
                continue  # one architecture: t-SNE is the slowest figure
            z = p["codes"][:n].reshape(n, -1)
            xy[k] = (
                z
                if z.shape[1] == 2
                else TSNE(
                    2, init="pca", random_state=seed, perplexity=min(30, n - 1)
                ).fit_transform(z)
            )
        runs.log_figure(
            plots.embeddings(xy, d.y_te[:n], "t-SNE of test codes"), "ae/embeddings.png"
        )


STAGE = STAGES.register("ae")(
    StageSpec(
        name="ae",
        datasets=lambda p: [p.ae.dataset],
        run=run,
        headline=("ae/test_mse", "ae/pca/test_mse", "ae/claims_holding"),
        optional_metrics=("ae/pca/test_mse",),  # absent when ae.methods leaves PCA out
        selection=(
            "epoch with the lowest validation loss (val_fraction of train, early stopping); "
            "the same validation split measures the gate's val MSE (a slight bias toward "
            "longer training; no labels involved); sparse λ and MSE factor fixed on a "
            "validation sweep; "
            "reference classifier selected on the same validation split; claims paired over "
            "ae.seeds"
        ),
        gate=Gate("ae/gate_val_mse", higher_is_better=False),
    )
)
