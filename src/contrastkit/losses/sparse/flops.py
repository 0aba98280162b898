"""The FLOPS regulariser of learned sparse representations and its IDF-aware form: squared
column means of the absolute term weights over the batch, O(N V) (exact under a process group:
the column sums and the row count are summed over the ranks)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..._validation import check_compatible, check_embeddings, check_tensor
from ...objective import (
    Objective,
    exact_objective,
    global_rows,
    global_total,
    objective_group,
    sum_across_ranks,
    wide,
)

__all__ = ["flops", "FLOPS", "idf_flops", "IDFFLOPS"]


def _check_threshold(threshold) -> Optional[int]:
    if threshold is None:
        return None
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 0:
        raise ValueError(f"threshold must be None or an integer >= 0, got {threshold!r}")
    return threshold


def _absolute(x: Tensor, threshold: Optional[int]) -> Tensor:
    """``|x|`` in the compute dtype, with the gradient of ``x`` at 0 (the one-sided derivative
    of non-negative weights, as sentence-transformers' ``FlopsLoss``, which has no absolute
    value); with ``threshold``, rows with at most ``threshold`` non-zero entries are zeroed (they
    still count in the mean)."""
    x = wide(x)
    a = torch.where(x >= 0, x, -x)
    if threshold is not None:
        keep = (x != 0).sum(dim=1) > threshold
        a = a * keep[:, None].to(a.dtype)
    return a


def _squared_column_means(a: Tensor, weight: Optional[Tensor], *, group) -> Tensor:
    """``sum_v weight_v (sum_i a_iv / N)^2`` over every rank's rows (``N``: the global count):
    the column sums are summed over the ranks and each rank contributes ``1 / world`` of the
    scalar to :func:`~contrastkit.objective.global_total`, so the value is the global one and
    the gradient follows the group's convention."""
    n = global_rows(a.shape[0], group=group)
    col = sum_across_ranks(a.sum(dim=0), "column sums", group=group)
    sq = (col / max(n, 1)).pow(2)
    total = (sq if weight is None else sq * weight).sum()
    if group is None:
        return total
    return global_total(total / group.world, group=group)


@exact_objective
def flops(embeddings: Tensor, *, threshold: Optional[int] = None) -> Tensor:
    """The FLOPS regulariser of a batch of sparse representations; see :class:`FLOPS`."""
    group = objective_group()
    check_embeddings("embeddings", embeddings)
    threshold = _check_threshold(threshold)
    return _squared_column_means(_absolute(embeddings, threshold), None, group=group)


class FLOPS(Objective, functional=flops):
    """FLOPS regulariser: the expected number of multiplications of sparse dot-product retrieval.

    Sparse retrievers (SPLADE and its relatives) score a query and a document by the dot product
    of two vocabulary-sized vectors of non-negative term weights, served from an inverted index.
    The cost of that product grows with the probability that a term is active in both, which
    FLOPS approximates by the squared mean activation of each term over the batch. Added to a
    ranking or contrastive loss with a small weight it pushes whole vocabulary columns to zero
    (rather than single entries, as an L1 penalty does), which shortens posting lists. With
    term weights ``w_iv`` of ``N`` rows and ``V`` terms::

        a_v   = (1 / N) sum_i |w_iv|
        FLOPS = sum_v a_v^2

    ``threshold`` (an integer ``t``) applies the L0 mask of sentence-transformers'
    ``FlopsLoss(threshold=t)`` and OpenSearch's ``flops_threshold``: a row with at most ``t``
    non-zero terms contributes nothing (its weights are zeroed before the mean, but it still
    counts in ``N``). FLOPS is a quantity of the whole batch, not a mean of per-sample terms, so
    there is no ``reduction``. Compose it with any objective (a query-side and a document-side
    term, usually with a quadratic warm-up of the weights)::

        loss = info_nce(q, d) + lambda_q * flops(q) + lambda_d * flops(d)

    Equals sentence-transformers' ``FlopsLoss`` (which assumes non-negative weights and omits
    the absolute value) and OpenSearch's ``flops_value`` with one document per query. Exact
    under a ``torch.distributed`` process group: the column means are over every rank's rows
    (an all-reduce of ``V`` column sums), as on the gathered batch.

    Args:
        threshold (int, optional): the L0 mask: rows with at most this many non-zero entries
            are left out of the sums (default ``None``: every row counts).

    Inputs:
        ==============  ==========  ====================================================
        input           shape       meaning
        ==============  ==========  ====================================================
        ``embeddings``  ``(N, V)``  term weights of a batch (e.g. :func:`splade` of MLM
                                    logits), floating; absolute values are used
        ==============  ==========  ====================================================

    Example::

        import torch
        import contrastkit as ck
        from contrastkit.losses.sparse import FLOPS, splade

        logits = torch.randn(4, 7, 50)  # (batch, tokens, vocabulary) of an MLM head
        mask = torch.ones(4, 7, dtype=torch.bool)
        q_sparse = splade(logits, mask)
        d_sparse = splade(torch.randn(4, 9, 50), torch.ones(4, 9, dtype=torch.bool))
        loss = ck.info_nce(q_sparse, d_sparse) + 1e-3 * FLOPS()(q_sparse)

    See also:
        :class:`IDFFLOPS` (inference-free retrievers), :func:`splade` (the activation),
        :class:`InfoNCE` (a ranking loss to add it to).

    References:
        Paria, Yeh, Yen, Xu, Ravikumar, Poczos, "Minimizing FLOPs to Learn Efficient Sparse
        Representations", arXiv:2004.05665.
        Formal, Lassance, Piwowarski, Clinchant, "SPLADE v2: Sparse Lexical and Expansion Model
        for Information Retrieval", arXiv:2109.10086.
    """


@exact_objective
def idf_flops(contributions: Tensor, idf: Tensor, *, threshold: Optional[int] = None) -> Tensor:
    """FLOPS of an inference-free retriever's document weights, given their IDF-weighted
    contributions to the score; see :class:`IDFFLOPS`."""
    group = objective_group()
    check_embeddings("contributions", contributions)
    check_tensor("idf", idf, ndim=1, kind="float")
    check_compatible("contributions", contributions, "idf", idf)
    if not bool((idf > 0).all()):
        bad = idf[idf <= 0]
        raise ValueError(
            f"idf must be > 0 for every term ({bad.numel()} of {idf.numel()} are not, e.g. "
            f"{bad[:4].tolist()}); drop the terms a query can never hold from the vocabulary"
        )
    threshold = _check_threshold(threshold)
    a = _absolute(contributions, threshold)
    return _squared_column_means(a, wide(idf).pow(-2), group=group)


class IDFFLOPS(Objective, functional=idf_flops):
    """IDF-aware FLOPS: the FLOPS regulariser of an inference-free sparse retriever.

    An inference-free retriever encodes only documents (SPLADE-doc); a query is its bag of
    tokens weighted by a fixed (or learned) IDF, so the score of query ``q`` and document ``d``
    is ``s(q, d) = sum_{v in q} idf_v w_dv``. The term weights ``w_dv`` are what the index
    stores and what the FLOPS penalty sparsifies, but the ranking loss only sees the
    *contributions* ``c_dv = idf_v w_dv``: measured on the contributions, the same penalty
    weights each term by ``1 / idf_v^2``, so frequent (low-IDF) terms are pushed to zero much
    harder than informative ones, for the same effect on the score. With contributions
    ``c_iv`` of ``N`` documents::

        w_iv     = c_iv / idf_v
        IDF-FLOPS = sum_v ((1 / N) sum_i |c_iv|)^2 / idf_v^2  =  FLOPS(w)

    Pass the contributions the ranking loss scores with (``idf * w``, which a dot product with
    the binary query bag turns into ``s(q, d)``) and the IDF vector: the value and the gradient
    with respect to ``w`` are those of :class:`FLOPS` on ``w``, and a learnable IDF receives no
    gradient from this term (its two paths cancel exactly), as in the reference training code
    where the penalty is applied to the document weights and the IDF only enters the score.
    With ``idf = 1`` it is :class:`FLOPS`. ``threshold``: the L0 mask, as :class:`FLOPS`. No
    ``reduction`` (a batch quantity). Exact under a ``torch.distributed`` process group.

    Args:
        threshold (int, optional): rows with at most this many non-zero entries are left out
            of the sums (default ``None``).

    Inputs:
        =================  ==========  ================================================
        input              shape       meaning
        =================  ==========  ================================================
        ``contributions``  ``(N, V)``  ``idf_v * w_iv``: each term's contribution per
                                       unit of query weight, floating
        ``idf``            ``(V,)``    the query-side term weights, > 0 (same dtype)
        =================  ==========  ================================================

    Example::

        import torch
        from contrastkit.losses.sparse import IDFFLOPS, splade

        idf = torch.rand(50) * 5 + 0.5
        docs = splade(torch.randn(4, 9, 50), torch.ones(4, 9, dtype=torch.bool))
        loss = 1e-3 * IDFFLOPS()(idf * docs, idf)

    See also:
        :class:`FLOPS`, :func:`splade`.

    References:
        Geng, Ru, Yang, "Towards Competitive Search Relevance For Inference-Free Learned Sparse
        Retrievers", arXiv:2411.04403.
        Paria et al., "Minimizing FLOPs to Learn Efficient Sparse Representations",
        arXiv:2004.05665.
    """
