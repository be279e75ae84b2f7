"""Autoencoder family: every method registered by name in AE_METHODS."""

from adaptflow.methods.ae import autoencoder, denoising, pca, sparse, vae  # noqa: F401  (register)
from adaptflow.methods.ae.registry import AE_METHODS

__all__ = ["AE_METHODS"]
