"""Matryoshka representation learning (Kusupati et al., 2022; sentence-transformers'
``MatryoshkaLoss``): any objective applied to nested prefixes of the embeddings, the weighted
losses summed. Exact under a process group when the wrapped objective is."""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

from torch import Tensor

from ..._validation import check_embeddings
from ...objective import Objective, exact_objective, prepare

__all__ = ["matryoshka", "Matryoshka"]


def _check_dims(dims, weights, d: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    if isinstance(dims, (int, str)) or not isinstance(dims, Sequence) or len(dims) == 0:
        raise ValueError(f"dims must be a non-empty sequence of ints, got {dims!r}")
    for k in dims:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= d:
            raise ValueError(f"dims must hold ints in [1, {d}] (the embedding size), got {dims!r}")
    if len(set(dims)) != len(dims):
        raise ValueError(f"dims must be distinct, got {dims!r}")
    if weights is None:
        weights = [1.0] * len(dims)
    if isinstance(weights, (int, float, str)) or not isinstance(weights, Sequence):
        raise ValueError(f"weights must be a sequence of numbers, got {weights!r}")
    if len(weights) != len(dims):
        raise ValueError(f"weights must have one value per dim ({len(dims)}), got {weights!r}")
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise ValueError(f"weights must be finite numbers, got {weights!r}")
    return tuple(dims), tuple(float(w) for w in weights)


@exact_objective
def matryoshka(
    *inputs,
    objective: Callable[..., Tensor],
    dims: Sequence[int],
    weights: Optional[Sequence[float]] = None,
    normalize: bool = True,
) -> Tensor:
    """``objective`` on nested prefixes of the embeddings, weighted and summed; see
    :class:`Matryoshka`."""
    if not callable(objective):
        raise ValueError(f"objective must be a callable loss, got {type(objective).__name__}")
    if not inputs:
        raise ValueError("inputs: give at least one embedding tensor")
    check_embeddings("inputs[0]", inputs[0], ndim=(2, 3))
    d = inputs[0].shape[-1]
    dims, weights = _check_dims(dims, weights, d)

    def truncate(x, k):
        if not (isinstance(x, Tensor) and x.is_floating_point() and x.dim() >= 2):
            return x
        if x.shape[-1] != d:
            return x
        # normalised in fp32, fp16/bf16 rounded once and kept (the wrapped objective decides)
        return prepare(x[..., :k], normalize, keep_half=True)

    total: Tensor | float = 0.0
    for k, w in zip(dims, weights):
        total = total + w * objective(*(truncate(x, k) for x in inputs))
    assert isinstance(total, Tensor)
    return total


class Matryoshka(Objective, functional=matryoshka):
    """Matryoshka representation learning: train embeddings whose prefixes are embeddings too, by
    applying an objective to the first ``k`` coordinates for several ``k`` and summing.

    Every floating input of the same last dimension as the first input (the embeddings, 2-D or
    3-D) is cut to its first ``k`` coordinates and, by default, L2-normalised again (as
    sentence-transformers' ``shrink``); other inputs (labels, masks, relevance) pass unchanged.
    (A floating input that is not an embedding but has width ``d``, e.g. an ``(N, d)`` score
    matrix, would be cut too: bind it into the objective with ``functools.partial``.)
    The wrapped objective's losses are weighted and **summed** (not averaged: the loss grows
    with the number of prefixes). Re-normalisation turns dot-product objectives into cosine
    ones at every prefix. Equal to sentence-transformers'
    ``MatryoshkaLoss(model, loss, matryoshka_dims, matryoshka_weights)`` on the same
    embeddings (``n_dims_per_step=-1``; to sample prefixes per step, pass different ``dims``).
    Exact under a process group when the wrapped objective is exact (a rank-local one raises
    there itself). Formula::

        trunc_k(x) = normalize(x[..., :k])
        loss       = sum_k  w_k * objective(trunc_k(inputs))

    Args:
        objective (callable): the loss applied at every prefix, e.g.
            ``MultipleNegativesRanking()`` or ``functools.partial(info_nce, temperature=0.05)``.
        dims (sequence of int): the prefix sizes, distinct, each in ``[1, d]``; include ``d``
            to train the full embedding as well.
        weights (sequence of float, default None = all 1): one weight per entry of ``dims``.
        normalize (bool, default True): L2-normalise each prefix.

    Inputs:
        - ``*inputs``: the wrapped objective's inputs; the first is an embedding tensor
          ``(N, d)`` or ``(N, V, d)``, and every floating input whose last dimension is ``d``
          is truncated.
        - returns what the objective returns, weighted and summed over the prefixes.

    Example::

        import torch
        from contrastkit.losses.infonce import MultipleNegativesRanking
        from contrastkit.losses.ranking import Matryoshka

        a, p = torch.randn(8, 64), torch.randn(8, 64)
        loss = Matryoshka(objective=MultipleNegativesRanking(), dims=(64, 32, 16))(a, p)

    See also:
        :class:`MultipleNegativesRanking`, :class:`CoSENT` (objectives to wrap).

    References:
        Kusupati et al., "Matryoshka Representation Learning", NeurIPS 2022, arXiv:2205.13147.
        Reimers, Gurevych, "Sentence-BERT", arXiv:1908.10084 (sentence-transformers'
        ``MatryoshkaLoss``).
    """
