"""Small input checks shared by the metric functions (all raise ``ValueError``)."""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import check_compatible, check_embeddings, check_labels, check_positive

__all__ = [
    "check_compatible",
    "check_embeddings",
    "check_labels",
    "check_positive",
    "check_k",
    "normalize",
]


def check_k(name: str, k, n_ref: int, ref_name: str, ref_shape, what: str = "rows") -> None:
    """``k`` is an int in ``[1, n_ref]``; the message names both shapes."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"{name} must be a positive integer, got {k!r}")
    if k > n_ref:
        raise ValueError(
            f"{name}={k} is larger than the {n_ref} {what} of {ref_name} (shape {tuple(ref_shape)})"
        )


def normalize(x: Tensor) -> Tensor:
    """L2 normalisation along the last dimension (PyTorch default eps 1e-12)."""
    return torch.nn.functional.normalize(x, dim=-1)
