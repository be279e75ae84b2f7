"""Greedy layer-wise pretraining (seed Q3, Bengio et al. 2007; Hinton et al. 2006).

Layer 1 is trained on the raw images, layer k on the codes h^(k-1) of the already-trained layers
1..k-1 (computed once, frozen), each as its own unsupervised model; the encoders are then
stacked into one deep net and fine-tuned end to end with labels.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from adaptflow.methods.pretrain.layers import LAYER_METHODS
from adaptflow.models.stacked import StackedEncoder
from adaptflow.training import Trainer
from adaptflow.training.loaders import array_loader


@dataclass
class GreedyResult:
    encoder: StackedEncoder
    layer_losses: list[list[float]] = field(default_factory=list)  # per layer, per epoch
    layer_seconds: list[float] = field(default_factory=list)
    input_shapes: list[tuple[int, ...]] = field(default_factory=list)  # what layer k was fed
    layers: list[torch.nn.Module] = field(default_factory=list)  # the trained one-layer models


@torch.no_grad()
def codes(
    encoder: StackedEncoder, x: np.ndarray, upto: int, device, batch: int = 1000
) -> np.ndarray:
    """h^(upto) for every row of x: the frozen output of layers 1..upto."""
    encoder.eval().to(device)
    out = [
        encoder(torch.from_numpy(x[i : i + batch]).to(device), upto).cpu()
        for i in range(0, len(x), batch)
    ]
    return torch.cat(out).numpy()


def greedy_pretrain(
    x: np.ndarray,
    layers: list[int],
    activation: str,
    method: str,
    options,
    settings,
    device: torch.device,
    seed: int,
    progress: bool = False,
    on_layer_epoch: Callable[[int, int, dict[str, float]], None] | None = None,
    on_layer_input: Callable[[int, np.ndarray], None] | None = None,
) -> GreedyResult:
    """Train layers one at a time on unlabeled x; returns the stacked (pretrained) encoder.

    `settings` needs epochs, batch_size, lr (the pretraining budget of *each* layer).
    `on_layer_input(k, h)` sees the exact array layer k (0-based) is trained on.
    """
    input_dim = int(np.prod(x.shape[1:]))
    encoder = StackedEncoder(input_dim, layers, activation)
    result = GreedyResult(encoder)
    cls = LAYER_METHODS.get(method)
    flat = x.reshape(len(x), -1)
    h = flat.astype(np.float32)
    dims = [input_dim, *layers]
    for k in range(len(layers)):
        t0 = time.perf_counter()
        result.input_shapes.append(h.shape)
        if on_layer_input:
            on_layer_input(k, h)
        torch.manual_seed(seed * 1000 + k)
        # layer 1 reads images in [0, 1]; above it, sigmoid codes are in (0, 1) as well
        bounded = k == 0 or activation == "sigmoid"
        layer = cls(dims[k], dims[k + 1], activation, bounded, options)
        trainer = Trainer(
            device,
            epochs=settings.epochs,
            patience=None,
            amp=settings.amp,
            progress=progress,
            desc=f"layer {k + 1}/{len(layers)}",
            restore_best=False,  # no validation set here; the RBM's CD loss is no quality score
            on_epoch_end=(lambda e, m, k=k: on_layer_epoch(k, e, m)) if on_layer_epoch else None,
        )
        history = trainer.fit(
            layer,
            array_loader(h, batch_size=settings.batch_size, shuffle=True, seed=seed + k),
            optimizers=[torch.optim.Adam(layer.parameters(), lr=settings.lr)],
        )
        encoder.load_layer(k, *layer.weights())
        result.layers.append(layer.eval())
        result.layer_losses.append(history.series("mse"))
        h = codes(encoder, flat, k + 1, device)  # feed layer k+1 the new codes
        result.layer_seconds.append(time.perf_counter() - t0)
    return result
