"""Negative weights in the engine's per-tile form.

The weight builders of this package (:class:`ClusterNegativeWeights`,
:class:`CommunityNegativeWeights`, a dense ``(N, M)`` tensor) give per-pair negative weights;
:func:`weight_function` turns any of them into the ``fn(r0, r1, c0, c1) -> (b, t)`` tile function
the engine evaluates, so that no ``N x M`` tensor is built when the builder computes tiles. The
objective that consumes them is :func:`contrastkit.losses.info_nce_with_negatives`
(``weights=``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_tensor

__all__ = ["weight_function"]


def weight_function(weights, n_rows: int, n_cols: int):
    """``weights`` (dense tensor, ``.tile`` object or callable) as ``fn(r0, r1, c0, c1)``."""
    if weights is None:
        return None
    if isinstance(weights, Tensor):
        check_tensor("weights", weights, kind="real", finite=False)
        if weights.shape != (n_rows, n_cols):
            raise ValueError(
                f"weights must have shape (N={n_rows}, M={n_cols}) (one per query and key "
                f"column), got {tuple(weights.shape)}"
            )
        if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
            raise ValueError("weights must be finite and >= 0")
        w = weights.detach()
        return lambda r0, r1, c0, c1: w[r0:r1, c0:c1]
    if hasattr(weights, "tile"):
        shape = getattr(weights, "shape", None)
        if shape is not None and tuple(shape) != (n_rows, n_cols):
            raise ValueError(
                f"weights cover {tuple(shape)} pairs but the problem is ({n_rows}, {n_cols})"
            )
        return weights.tile
    if callable(weights):
        return weights
    raise ValueError(f"weights must be a tensor, a .tile object or a callable, got {weights!r:.60}")
