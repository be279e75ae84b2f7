"""CDAN+E (Long et al. 2018): DANN's adversary conditioned on the classifier's predictions."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from adaptflow.losses.alignment import (
    cdan_features,
    cdan_weights,
    grl_lambda,
    randomized_multilinear,
)
from adaptflow.methods.da.base import DA_METHODS
from adaptflow.methods.da.dann import DANN, DANNConfig, domain_head


class CDANConfig(DANNConfig):
    entropy: bool = Field(True, description="CDAN+E: weight examples by 1 + exp(−H(p))")
    max_dim: int = Field(
        4096, ge=1, description="above this d·K, the randomized multilinear map of width max_dim"
    )


@DA_METHODS.register("cdan")
class CDAN(DANN):
    """The domain classifier (one logit, sigmoid cross-entropy, behind DANN's gradient reversal
    and λ schedule) sees the multilinear map f ⊗ p of features and class probabilities p (no
    gradient through p, as in tllib), so it can align the class-conditional distributions that
    DANN's marginal alignment mixes up. When d·K > max_dim, the randomized map (eq. 6) with
    Gaussian matrices drawn once at construction (buffers: saved and moved with the model).
    CDAN+E weights each example by 1 + exp(−H(p)), normalised to mean 1 within each domain, and
    averages the two domains' losses, as the authors' code does."""

    Config = CDANConfig

    def __init__(self, featurizer, n_classes, config, total_steps):
        super().__init__(featurizer, n_classes, config, total_steps)
        d = featurizer.dim
        width = d * n_classes
        if width > config.max_dim:
            width = config.max_dim
            self.register_buffer("r_f", torch.randn(d, width))
            self.register_buffer("r_g", torch.randn(n_classes, width))
        else:
            self.register_buffer("r_f", None)
            self.register_buffer("r_g", None)
        # DANN's head sees f (width d); ours sees the conditioning (width d·K or max_dim)
        self.domain = domain_head(width, config.hidden, config.batch_norm)

    def condition(self, f: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """The discriminator's input: f ⊗ p, (batch, d·K), or its randomized map (batch, max_dim)."""
        if self.r_f is None:
            return cdan_features(f, probs.to(f.dtype))
        return randomized_multilinear(f, probs, self.r_f.to(f.dtype), self.r_g.to(f.dtype))

    def adaptation_loss(self, f_s, f_t, logits_s, logits_t):
        lam = grl_lambda(self.progress) if self.config.schedule else 1.0
        n_s = len(f_s)
        probs = F.softmax(torch.cat([logits_s, logits_t]).float(), dim=1).detach()
        d = self.domain_logits(self.condition(torch.cat([f_s, f_t]), probs), lam).float()
        target = torch.cat([torch.zeros(n_s), torch.ones(len(f_t))]).to(d.device)
        bce = F.binary_cross_entropy_with_logits(d, target, reduction="none")
        if self.config.entropy:
            bce = torch.cat([cdan_weights(probs[:n_s]), cdan_weights(probs[n_s:])]) * bce
        loss = 0.5 * (bce[:n_s].mean() + bce[n_s:].mean())  # each domain counts half
        acc = ((d > 0).float() == target).float().mean()
        return {"align": loss, "domain_acc": acc, "grl_lambda": torch.tensor(lam)}
