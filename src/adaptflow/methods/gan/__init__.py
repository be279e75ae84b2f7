"""GANs (seed Q7): the adversarial game, trained through the shared trainer with two optimisers."""

from adaptflow.methods.gan.adversarial import (
    GAN_VARIANTS,
    Adversarial,
    CollapseGuard,
    GANCollapseError,
)

__all__ = ["GAN_VARIANTS", "Adversarial", "CollapseGuard", "GANCollapseError"]
