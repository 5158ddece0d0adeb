"""Ops: each a forward that returns ``(y, cache)`` and, beside it, a hand-derived ``backward``.

Batch-major throughout: activations are ``(batch, features)``.
"""

from jaxmlp.ops import activations, batchnorm, dropout, linear, losses

__all__ = ["activations", "batchnorm", "dropout", "linear", "losses"]
