"""Domain adaptation (seed Q6): one registered method per file, DomainBed's surface."""

from adaptflow.methods.da import cdan, dann, oracle, self_training, simple  # noqa: F401  (register)
from adaptflow.methods.da.base import DA_METHODS, DAMethod

__all__ = ["DA_METHODS", "DAMethod"]
