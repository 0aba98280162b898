"""Spearman and Pearson correlations for semantic textual similarity (SimCSE / SentEval
protocol)."""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from .._extras import require
from ._checks import check_compatible, check_embeddings, normalize

__all__ = ["spearman_correlation", "pearson_correlation", "sts_spearman", "sts_pearson"]


def _check_pair(predictions: Tensor, gold: Tensor):
    for name, v in (("predictions", predictions), ("gold", gold)):
        if not isinstance(v, Tensor) or v.dim() != 1:
            shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise ValueError(f"{name} must be a 1-D tensor, got {shape}")
    if predictions.shape != gold.shape or predictions.shape[0] < 2:
        raise ValueError(
            f"predictions and gold must have the same length >= 2, got shapes "
            f"{tuple(predictions.shape)} and {tuple(gold.shape)}"
        )
    p = predictions.detach().double().cpu().numpy()
    g = gold.detach().double().cpu().numpy()
    if (p == p[0]).all() or (g == g[0]).all():
        return None
    return p, g


def spearman_correlation(predictions: Tensor, gold: Tensor) -> float:
    """Spearman rank correlation ×100 between predicted and gold scores (``scipy.stats.spearmanr``).

    For the STS12-16 "all" setting concatenate the predictions and gold scores of all
    sub-datasets of a year before calling (one correlation, not a mean of per-subset ones).
    Constant predictions (or gold) make the correlation undefined: returns NaN with a warning.
    """
    require("scipy", "metrics", "contrastkit.metrics.spearman_correlation")
    from scipy.stats import spearmanr

    pg = _check_pair(predictions, gold)
    if pg is None:
        warnings.warn(
            "constant predictions or gold scores: Spearman correlation is undefined", stacklevel=2
        )
        return math.nan
    return 100.0 * float(spearmanr(*pg).statistic)


def pearson_correlation(predictions: Tensor, gold: Tensor) -> float:
    """Pearson correlation ×100 between predicted and gold scores (``scipy.stats.pearsonr``).

    Same inputs and conventions as :func:`spearman_correlation` (NaN with a warning when either
    side is constant).
    """
    require("scipy", "metrics", "contrastkit.metrics.pearson_correlation")
    from scipy.stats import pearsonr

    pg = _check_pair(predictions, gold)
    if pg is None:
        warnings.warn(
            "constant predictions or gold scores: Pearson correlation is undefined", stacklevel=2
        )
        return math.nan
    return 100.0 * float(pearsonr(*pg).statistic)


def _pair_cosines(emb1: Tensor, emb2: Tensor, gold: Tensor) -> Tensor:
    check_embeddings("emb1", emb1)
    check_embeddings("emb2", emb2)
    check_compatible("emb1", emb1, "emb2", emb2, same_rows=True)
    if not isinstance(gold, Tensor) or gold.shape != (emb1.shape[0],):
        shape = tuple(gold.shape) if isinstance(gold, Tensor) else type(gold).__name__
        raise ValueError(f"gold must have shape ({emb1.shape[0]},) like emb1 rows, got {shape}")
    return (normalize(emb1.double()) * normalize(emb2.double())).sum(dim=1)


@torch.no_grad()
def sts_spearman(emb1: Tensor, emb2: Tensor, gold: Tensor) -> float:
    """STS evaluation (SimCSE, Gao et al. 2021; SentEval): Spearman ×100 between the cosine
    similarity of each sentence pair ``(emb1[i], emb2[i])`` and the gold score ``gold[i]``."""
    return spearman_correlation(_pair_cosines(emb1, emb2, gold), gold)


@torch.no_grad()
def sts_pearson(emb1: Tensor, emb2: Tensor, gold: Tensor) -> float:
    """As :func:`sts_spearman`, with the Pearson correlation ×100 of cosine and gold."""
    return pearson_correlation(_pair_cosines(emb1, emb2, gold), gold)
