"""Slow: the seed's headline claims on real data at near-default budgets (`make test-slow`).

These retrain real models for minutes, so CI skips them; they guard against a change that
silently breaks what the stages are for (e.g. a denoising AE that stops denoising).
"""

import pytest
import torch

from adaptflow.config import MnistSource
from adaptflow.data import SOURCES
from adaptflow.methods.ae import AE_METHODS
from adaptflow.methods.ae.base import FitContext
from adaptflow.models.factory import NetSpec
from adaptflow.stages.ae import EvalData, evaluate, noise_key
from adaptflow.training import seed_everything

pytestmark = pytest.mark.slow
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def mnist():
    return SOURCES.get("mnist")(MnistSource(kind="mnist"), 0)


def test_denoising_beats_plain_autoencoder_on_noisy_input(mnist, raw_params):
    """The DAE trains at Gaussian sigma = 0.3 only; it is judged on heavier noise it never saw:
    Gaussian sigma = 0.5 and masking p = 0.5 (a noise kind it never saw). At light noise
    (sigma = 0.1, p = 0.1) it does *not* beat the plain AE (it over-smooths: -1.3 / -2.6 dB
    measured), which the stage's grid verdict reports; this test guards the gain only."""
    from adaptflow.config import build_params

    cfg = build_params(raw_params).ae
    dae_options = AE_METHODS.get("denoising").Config(noise="gaussian", sigma=0.3)
    d = EvalData.build(mnist, cfg, 0)
    psnr = {}
    for name, options in (("ae", None), ("denoising", dae_options)):
        seed_everything(0)
        method = AE_METHODS.get(name)(
            NetSpec((1, 28, 28), "mlp", (512, 256), (32, 64), 32), options
        )
        method.fit(d.x_tr, d.x_val, FitContext(cfg, CPU, 0, progress=False))
        psnr[name] = evaluate(method, d, cfg, 0)[0]
    gain = {
        k: psnr["denoising"][f"test_psnr_{k}"] - psnr["ae"][f"test_psnr_{k}"]
        for k in (noise_key("gaussian", 0.5), noise_key("masking", 0.5))
    }
    # measured (seed 0, 30 epochs): +2.9 dB at sigma 0.5, +1.8 dB at p 0.5
    assert gain[noise_key("gaussian", 0.5)] > 1.5, gain
    assert gain[noise_key("masking", 0.5)] > 0.75, gain
