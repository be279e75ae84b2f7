"""Greedy layer-wise pretraining (seed Q3): layer methods, the greedy stacker, the classifier."""

from adaptflow.methods.pretrain import layers  # noqa: F401  (register)
from adaptflow.methods.pretrain.layers import LAYER_METHODS

__all__ = ["LAYER_METHODS"]
