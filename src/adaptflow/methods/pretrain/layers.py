"""One-layer unsupervised learners for greedy pretraining, registered by name.

Each trains on the codes h^(l-1) of the layers below and exposes `weights()` -> (W, b) of the
encoder h^(l) = f(W h^(l-1) + b) that is copied into the deep net. Seed Q3:
L^(l) = ||h^(l-1) - h_hat^(l-1)||^2.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from adaptflow.losses.noise import masking
from adaptflow.losses.sparsity import kl_sparsity
from adaptflow.models.mlp import ACTIVATIONS
from adaptflow.models.rbm import RBM
from adaptflow.registry import Registry
from adaptflow.training import OneOptimizerMethod

LAYER_METHODS: Registry = Registry("pretrain layer method")


class LayerOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Layer(OneOptimizerMethod):
    def batch_losses(self, batch):
        (x,) = batch
        return self.losses(x)


@LAYER_METHODS.register("ae")
class LayerAE(_Layer):
    """h = f(W x + b), x_hat = g(W' h + b'); g = sigmoid when inputs lie in [0, 1]."""

    class Config(LayerOptions):
        pass

    def __init__(self, d_in: int, d_out: int, activation: str, bounded_input: bool, options=None):
        super().__init__()
        self.options = options or self.Config()
        self.enc = nn.Linear(d_in, d_out)
        self.act = ACTIVATIONS[activation]()
        self.dec = nn.Linear(d_out, d_in)
        self.bounded_input = bounded_input

    def encode(self, x):
        return self.act(self.enc(x))

    def decode(self, h):
        out = self.dec(h)
        return torch.sigmoid(out) if self.bounded_input else out

    def corrupt(self, x):
        return x

    def penalty(self, h) -> dict[str, torch.Tensor]:
        return {}

    def losses(self, x):
        h = self.encode(self.corrupt(x))
        out = {"mse": F.mse_loss(self.decode(h).float(), x.float())}
        extra = self.penalty(h)
        out["loss"] = out["mse"] + sum(extra.values(), torch.zeros((), device=x.device))
        return out | extra

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.enc.weight.detach().clone(), self.enc.bias.detach().clone()


@LAYER_METHODS.register("denoising")
class LayerDenoising(LayerAE):
    """Stacked denoising AE layer (Vincent et al. 2010): reconstruct h from a masked copy."""

    class Config(LayerOptions):
        p: float = Field(0.25, gt=0, lt=1, description="masking probability")

    def corrupt(self, x):
        return masking(x, self.options.p) if self.training else x


@LAYER_METHODS.register("sparse")
class LayerSparse(LayerAE):
    class Config(LayerOptions):
        rho: float = Field(0.05, gt=0, lt=1)
        lam: float = Field(0.1, ge=0)

    def penalty(self, h):
        if not isinstance(self.act, nn.Sigmoid):
            raise ValueError(
                "sparse layers need pretrain.activation: sigmoid (rho_hat must be in (0, 1))"
            )
        return {"kl_sparsity": self.options.lam * kl_sparsity(h, self.options.rho)}


@LAYER_METHODS.register("rbm")
class LayerRBM(_Layer):
    """RBM layer trained with CD-k; its hidden probabilities are the next layer's input."""

    class Config(LayerOptions):
        k: int = Field(1, ge=1, le=50, description="Gibbs steps of contrastive divergence")

    def __init__(self, d_in: int, d_out: int, activation: str, bounded_input: bool, options=None):
        super().__init__()
        if activation != "sigmoid" or not bounded_input:
            raise ValueError("rbm layers need pretrain.activation: sigmoid (units are Bernoulli)")
        self.options = options or self.Config()
        self.rbm = RBM(d_in, d_out)

    def encode(self, x):
        return self.rbm.hidden_probs(x)

    def losses(self, x):
        x = x.float()
        loss = self.rbm.cd_loss(x, self.options.k)
        with torch.no_grad():
            mse = F.mse_loss(self.rbm.visible_probs(self.rbm.hidden_probs(x)), x)
        return {"loss": loss, "mse": mse}

    def weights(self):
        return self.rbm.W.detach().clone(), self.rbm.b_h.detach().clone()


LayerKind = Literal["ae", "denoising", "sparse", "rbm"]
