"""The SPLADE activation: MLM logits over the vocabulary at every token position pooled into one
non-negative sparse vector per sequence (a plain function, not an objective)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..._validation import check_tensor
from ...objective import wide

__all__ = ["splade"]

POOLINGS = ("max", "sum")
ACTIVATIONS = ("relu", "log1p_relu")


def _saturate(x: Tensor, activation: str) -> Tensor:
    y = torch.log1p(torch.relu(x))
    return torch.log1p(y) if activation == "log1p_relu" else y


def splade(
    logits: Tensor,
    attention_mask: Optional[Tensor] = None,
    *,
    pooling: str = "max",
    activation: str = "relu",
) -> Tensor:
    """SPLADE term weights ``(N, V)`` from MLM logits ``(N, L, V)``.

    Each token position ``t`` of a sequence gives a log-saturated, non-negative weight to every
    vocabulary term, and the positions are pooled::

        pooling="max" (SPLADE v2, SPLADE++):  w_v = max_{t: mask_t} log(1 + relu(logit_tv))
        pooling="sum" (SPLADE v1):            w_v = sum_{t: mask_t} log(1 + relu(logit_tv))

    ``activation="log1p_relu"`` applies ``log1p`` once more (``log(1 + log(1 + relu(x)))``,
    OpenSearch's v3 inference-free document encoders). Positions where ``attention_mask`` is 0
    (padding) contribute nothing; a sequence without any unmasked position gets the zero vector.
    Because ``log(1 + relu(x))`` is non-decreasing, the max-pooled form takes the max of the
    masked logits first and saturates once (``O(N V)`` work after the max, no second
    ``(N, L, V)`` tensor); the gradient reaches each term's arg-max position only (the whole
    row when several positions tie). fp16/bf16 logits are pooled in their dtype and saturated
    in fp32 (the result is fp32). Equals sentence-transformers'
    ``SpladePooling(pooling_strategy=..., activation_function=...)`` on the same logits and mask.

    Args:
        logits: ``(N, L, V)`` floating, the MLM head's logits per token position.
        attention_mask: ``(N, L)`` bool or 0/1 integers; ``None``: every position counts.
        pooling: ``"max"`` (default) or ``"sum"``.
        activation: ``"relu"`` (default, ``log(1 + relu(x))``) or ``"log1p_relu"``.

    Returns:
        ``(N, V)`` non-negative term weights (use them as embeddings of a ranking loss and
        regularise them with :func:`~contrastkit.losses.sparse.flops`).

    References:
        Formal, Piwowarski, Clinchant, "SPLADE: Sparse Lexical and Expansion Model for First
        Stage Ranking", arXiv:2107.05720; Formal, Lassance, Piwowarski, Clinchant, "SPLADE v2",
        arXiv:2109.10086.
    """
    check_tensor("logits", logits, ndim=3, kind="float", finite=False)
    if logits.shape[1] == 0 or logits.shape[2] == 0:
        raise ValueError(f"logits needs at least one position and one term, got {logits.shape}")
    check_tensor("logits", logits, allow_nonfinite="inf")  # -inf logits are valid, NaN never
    if bool(torch.isposinf(logits).any()):
        raise ValueError(f"logits contains +inf values (shape {tuple(logits.shape)})")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    n, seq = logits.shape[:2]
    if attention_mask is None:
        keep = torch.ones(n, seq, dtype=torch.bool, device=logits.device)
    else:
        kind = "bool" if getattr(attention_mask, "dtype", None) == torch.bool else "real"
        check_tensor("attention_mask", attention_mask, ndim=2, kind=kind, ref=logits)
        if tuple(attention_mask.shape) != (n, seq):
            raise ValueError(
                f"attention_mask must have shape ({n}, {seq}) (one entry per token of logits "
                f"{tuple(logits.shape)}), got {tuple(attention_mask.shape)}"
            )
        if attention_mask.dtype == torch.bool:
            keep = attention_mask
        else:
            if not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
                raise ValueError("attention_mask must hold 0 and 1 only (or be a bool tensor)")
            keep = attention_mask != 0
    keep = keep[:, :, None]
    if pooling == "max":
        floor = torch.tensor(float("-inf"), dtype=logits.dtype, device=logits.device)
        top = torch.where(keep, logits, floor).amax(dim=1)
        return _saturate(wide(top), activation)
    zero = torch.zeros((), dtype=logits.dtype, device=logits.device)
    return _saturate(wide(torch.where(keep, logits, zero)), activation).sum(dim=1)
