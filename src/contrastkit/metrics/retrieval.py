"""Retrieval metrics: ground-truth ranks, hit rate / Recall@K, MRR@10, nDCG@10,
MAP@K, Precision@K, mean/median rank, and Mean Rank Variance (Nie et al., KDD 2024).

Two Recall@K conventions exist and are named separately: :func:`hit_rate_at_k` is the
cross-modal "R@K" (fraction of queries whose best correct item is in the top K, in %), and
:func:`recall_at_k` is the IR (BEIR/MTEB, trec_eval) ``|relevant ∩ top-K| / |relevant|``.
Ties are always broken towards the lower candidate index.

The IR metrics (``recall_at_k``, ``mrr_at_k``, ``ndcg_at_k``, ``map_at_k``, ``precision_at_k``)
take a dense ``(n_queries, n_candidates)`` score matrix; :func:`ranked_retrieval_metrics` computes
the same numbers from each query's ranked top-K candidate ids (what a FAISS search returns), so a
large corpus never needs a dense score matrix. Queries without a relevant candidate are left out
of every mean (as BEIR / pytrec_eval do).
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import torch
from torch import Tensor

from ._checks import check_compatible, check_embeddings, check_k, normalize

__all__ = [
    "cosine_scores",
    "ground_truth_ranks",
    "retrieval_ranks",
    "hit_rate_at_k",
    "mean_rank",
    "median_rank",
    "recall_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "map_at_k",
    "precision_at_k",
    "ranked_retrieval_metrics",
    "IR_METRICS",
    "mean_rank_variance",
]

#: the names :func:`ranked_retrieval_metrics` reports, each as ``"<name>@<k>"``
IR_METRICS = ("ndcg", "recall", "mrr", "map", "precision")


@torch.no_grad()
def cosine_scores(queries: Tensor, candidates: Tensor) -> Tensor:
    """Cosine-similarity matrix ``normalize(queries) @ normalize(candidates)^T``, ``(n_q, n_c)``."""
    check_embeddings("queries", queries)
    check_embeddings("candidates", candidates)
    check_compatible("queries", queries, "candidates", candidates)
    return normalize(queries) @ normalize(candidates).T


def _check_scores(scores: Tensor) -> Tensor:
    if not isinstance(scores, Tensor) or scores.dim() != 2 or not scores.is_floating_point():
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(
            f"scores must be a 2-D floating tensor (n_queries, n_candidates), got {shape}"
        )
    if scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"scores must be non-empty, got shape {tuple(scores.shape)}")
    if torch.isnan(scores).any():
        raise ValueError(f"scores contains NaN (shape {tuple(scores.shape)})")
    return scores


def _positions(scores: Tensor) -> tuple[Tensor, Tensor]:
    """Descending stable order and the 0-based position of every candidate in it."""
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    pos = torch.empty_like(order)
    ar = torch.arange(scores.shape[1], device=scores.device).expand_as(order)
    pos.scatter_(1, order, ar)
    return order, pos


@torch.no_grad()
def ground_truth_ranks(scores: Tensor, targets: Tensor) -> Tensor:
    """0-based rank of the correct candidate for each query (open_clip / CCRK convention).

    ``rank = #{j : s_j > s_t} + #{j < t : s_j = s_t}`` (ties towards the lower index). ``targets``
    is either a ``(n_q,)`` integer tensor of correct indices or a ``(n_q, n_c)`` boolean mask of
    several correct candidates, in which case the rank is the minimum over them.
    """
    scores = _check_scores(scores)
    n_q, n_c = scores.shape
    _, pos = _positions(scores)
    if isinstance(targets, Tensor) and targets.dtype == torch.bool:
        if targets.shape != scores.shape:
            raise ValueError(
                f"targets mask must have the shape of scores {tuple(scores.shape)}, "
                f"got {tuple(targets.shape)}"
            )
        empty = ~targets.any(dim=1)
        if empty.any():
            raise ValueError(
                f"targets mask has {int(empty.sum())} queries without a correct candidate "
                f"(shape {tuple(targets.shape)})"
            )
        return pos.masked_fill(~targets, n_c).min(dim=1).values
    if (
        not isinstance(targets, Tensor)
        or targets.dim() != 1
        or targets.shape[0] != n_q
        or targets.is_floating_point()
    ):
        shape = tuple(targets.shape) if isinstance(targets, Tensor) else type(targets).__name__
        raise ValueError(
            f"targets must be an integer tensor of shape ({n_q},) or a bool mask of shape "
            f"{tuple(scores.shape)}, got {shape}"
        )
    if (targets < 0).any() or (targets >= n_c).any():
        raise ValueError(f"targets must index candidates in [0, {n_c}), got {targets.tolist()}")
    return pos.gather(1, targets.long()[:, None]).squeeze(1)


@torch.no_grad()
def retrieval_ranks(
    queries: Tensor, candidates: Tensor, targets: Optional[Tensor] = None
) -> Tensor:
    """:func:`ground_truth_ranks` on cosine scores of embeddings; ``targets=None`` = paired
    data (query ``i`` matches candidate ``i``, requires ``n_q == n_c``)."""
    scores = cosine_scores(queries, candidates)
    if targets is None:
        check_compatible("queries", queries, "candidates", candidates, same_rows=True)
        targets = torch.arange(queries.shape[0], device=queries.device)
    return ground_truth_ranks(scores, targets)


def _check_ranks(ranks: Tensor, name: str = "ranks", ndim: int = 1) -> Tensor:
    if not isinstance(ranks, Tensor) or ranks.dim() != ndim or ranks.numel() == 0:
        shape = tuple(ranks.shape) if isinstance(ranks, Tensor) else type(ranks).__name__
        raise ValueError(f"{name} must be a non-empty {ndim}-D tensor, got {shape}")
    return ranks


def hit_rate_at_k(ranks: Tensor, k: int) -> float:
    """Cross-modal Recall@K ("R@K"), in %: ``100 * mean(rank < k)`` for 0-based ranks."""
    ranks = _check_ranks(ranks)
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return 100.0 * float((ranks < k).double().mean())


def mean_rank(ranks: Tensor) -> float:
    """Mean rank, 1-based: ``mean(rank) + 1`` for 0-based ranks (open_clip)."""
    return float(_check_ranks(ranks).double().mean()) + 1.0


def median_rank(ranks: Tensor) -> float:
    """Median rank, 1-based: ``floor(median(rank)) + 1`` (numpy median: mean of middle two)."""
    return float(math.floor(float(_check_ranks(ranks).double().quantile(0.5)))) + 1.0


def _ranked_relevance(scores, relevance, k, exclude):
    scores = _check_scores(scores)
    if not isinstance(relevance, Tensor) or relevance.shape != scores.shape:
        shape = (
            tuple(relevance.shape) if isinstance(relevance, Tensor) else type(relevance).__name__
        )
        raise ValueError(
            f"relevance must have the shape of scores {tuple(scores.shape)}, got {shape}"
        )
    if (relevance < 0).any():
        raise ValueError("relevance must be >= 0 (graded relevance, 0 = not relevant)")
    check_k("k", k, scores.shape[1], "scores", scores.shape, what="candidates")
    rel = relevance.double()
    retrievable = torch.ones_like(scores, dtype=torch.bool)
    if exclude is not None:
        if not isinstance(exclude, Tensor) or exclude.shape != scores.shape:
            shape = tuple(exclude.shape) if isinstance(exclude, Tensor) else type(exclude).__name__
            raise ValueError(
                f"exclude must be a bool mask of shape {tuple(scores.shape)}, got {shape}"
            )
        retrievable = ~exclude.bool()
        scores = scores.masked_fill(~retrievable, float("-inf"))
    keep = (rel > 0).any(dim=1)  # queries without a relevant document are not evaluated
    if not keep.any():
        raise ValueError(f"no query has a relevant document (relevance shape {tuple(rel.shape)})")
    order, _ = _positions(scores)
    top = order[:, :k]
    ranked = rel.gather(1, top) * retrievable.gather(1, top)
    return ranked[keep], rel[keep]


def _discount(k: int, device=None) -> Tensor:
    return 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64, device=device))


def _ir_metric(name: str, ranked: Tensor, ideal: Tensor, n_rel: Tensor) -> Tensor:
    """Per-query metric from the gains of the top K (``ranked``, ``(n, K)``), the K best gains
    (``ideal``) and the number of relevant documents (``n_rel``) of each query."""
    k = ranked.shape[1]
    is_rel = (ranked > 0).double()
    if name == "recall":
        return is_rel.sum(dim=1) / n_rel
    if name == "precision":
        return is_rel.sum(dim=1) / k
    if name == "mrr":
        first = is_rel.argmax(dim=1).double() + 1
        return torch.where(is_rel.any(dim=1), 1.0 / first, torch.zeros_like(first))
    if name == "map":
        pos = torch.arange(1, k + 1, dtype=torch.float64, device=ranked.device)
        prec = is_rel.cumsum(dim=1) / pos
        return (prec * is_rel).sum(dim=1) / n_rel
    if name == "ndcg":
        disc = _discount(k, ranked.device)
        return (ranked * disc).sum(dim=1) / (ideal * disc).sum(dim=1)
    raise ValueError(f"unknown retrieval metric {name!r}; known: {IR_METRICS}")


def _dense(name, scores, relevance, k, exclude) -> float:
    ranked, rel = _ranked_relevance(scores, relevance, k, exclude)
    ideal = rel.sort(dim=1, descending=True).values[:, :k]
    return float(_ir_metric(name, ranked, ideal, (rel > 0).sum(dim=1).double()).mean())


@torch.no_grad()
def recall_at_k(
    scores: Tensor, relevance: Tensor, k: int = 10, exclude: Optional[Tensor] = None
) -> float:
    """IR Recall@K (BEIR/MTEB, trec_eval): mean over queries of ``|relevant ∩ top-K| / |relevant|``.

    ``relevance`` is ``(n_q, n_c)`` graded relevance (``> 0`` = relevant); queries with no
    relevant candidate are not evaluated. ``exclude`` (bool, same shape) marks candidates that
    are never retrieved (BEIR ``ignore_identical_ids``). Returns a fraction in ``[0, 1]``.
    """
    return _dense("recall", scores, relevance, k, exclude)


@torch.no_grad()
def mrr_at_k(
    scores: Tensor, relevance: Tensor, k: int = 10, exclude: Optional[Tensor] = None
) -> float:
    """MRR@K (default K = 10): mean of ``1 / rank_1``, the 1-based position of the first relevant
    document within the top K (0 if none). Same inputs as :func:`recall_at_k`."""
    return _dense("mrr", scores, relevance, k, exclude)


@torch.no_grad()
def ndcg_at_k(
    scores: Tensor, relevance: Tensor, k: int = 10, exclude: Optional[Tensor] = None
) -> float:
    """nDCG@K (default K = 10, trec_eval linear gain): ``DCG = sum_{i=1..K} rel_i / log2(i + 1)``,
    divided by the DCG of the ideal ordering of the query's judged documents; averaged over
    queries with at least one relevant document. Same inputs as :func:`recall_at_k`."""
    return _dense("ndcg", scores, relevance, k, exclude)


@torch.no_grad()
def map_at_k(
    scores: Tensor, relevance: Tensor, k: int = 10, exclude: Optional[Tensor] = None
) -> float:
    """MAP@K (trec_eval ``map_cut_K``, as BEIR reports it): mean over queries of
    ``sum_{i<=K, rel_i>0} P@i / |relevant|`` (the denominator is every relevant document of the
    query, not ``min(K, |relevant|)``). Same inputs as :func:`recall_at_k`."""
    return _dense("map", scores, relevance, k, exclude)


@torch.no_grad()
def precision_at_k(
    scores: Tensor, relevance: Tensor, k: int = 10, exclude: Optional[Tensor] = None
) -> float:
    """Precision@K (trec_eval ``P_K``): mean over queries of ``|relevant ∩ top-K| / K`` (always
    divided by K, even when a query has fewer relevant documents). Same inputs as
    :func:`recall_at_k`."""
    return _dense("precision", scores, relevance, k, exclude)


def _check_ks(ks) -> list[int]:
    ks = [ks] if isinstance(ks, int) else list(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks!r}")
    return sorted(set(ks))


@torch.no_grad()
def ranked_retrieval_metrics(
    top_ids,
    relevance: Sequence[Mapping[int, float]],
    ks=(10,),
    metrics: Sequence[str] = IR_METRICS,
) -> dict[str, float]:
    """IR metrics from ranked lists: ``{"ndcg@10": ..., "recall@10": ..., ...}``.

    ``top_ids`` is ``(n_queries, K)`` (numpy array, tensor or nested lists) of candidate ids in
    ranked order, best first, as returned by :func:`contrastkit.mining.search_topk`; ``-1`` marks
    padding (fewer than K results). ``relevance[i]`` maps candidate id -> graded relevance
    (``> 0`` = relevant) for query ``i``; its ideal DCG uses all of these judgements, whether
    retrieved or not. Every ``k`` in ``ks`` must be ``<= K``. Queries with no relevant candidate
    are left out (BEIR / pytrec_eval convention); if none is left, ``ValueError``. With the
    ranking of the dense scores, the numbers equal :func:`ndcg_at_k`, :func:`recall_at_k`,
    :func:`mrr_at_k`, :func:`map_at_k` and :func:`precision_at_k`.
    """
    ks = _check_ks(ks)
    unknown = [m for m in metrics if m not in IR_METRICS]
    if unknown:
        raise ValueError(f"unknown retrieval metric(s) {unknown}; known: {list(IR_METRICS)}")
    ids = torch.as_tensor(top_ids)
    if ids.dim() != 2 or ids.is_floating_point() or ids.shape[0] == 0:
        raise ValueError(
            f"top_ids must be a non-empty 2-D integer array (n_queries, K), got shape "
            f"{tuple(ids.shape)} dtype {ids.dtype}"
        )
    n_q, depth = ids.shape
    if len(relevance) != n_q:
        raise ValueError(f"relevance has {len(relevance)} entries but top_ids has {n_q} queries")
    if ks[-1] > depth:
        raise ValueError(f"k={ks[-1]} is larger than the {depth} ranked ids per query of top_ids")
    kmax = ks[-1]
    rows, ideals, n_rel = [], [], []
    id_rows = ids[:, :kmax].tolist()
    for i, judged in enumerate(relevance):
        gains = [float(g) for g in judged.values()]
        if any(g < 0 for g in gains):
            raise ValueError(f"relevance of query {i} has a negative grade")
        positive = sorted((g for g in gains if g > 0), reverse=True)
        if not positive:
            continue  # no relevant document: not evaluated
        seen: set = set()
        row = []
        for d in id_rows[i]:
            if d in seen and d >= 0:
                raise ValueError(f"top_ids of query {i} lists candidate {d} twice")
            seen.add(d)
            row.append(float(judged.get(d, 0.0)) if d >= 0 else 0.0)
        rows.append(row)
        ideals.append((positive + [0.0] * kmax)[:kmax])
        n_rel.append(len(positive))
    if not rows:
        raise ValueError(f"no query has a relevant document ({n_q} queries)")
    ranked = torch.tensor(rows, dtype=torch.float64)
    ideal = torch.tensor(ideals, dtype=torch.float64)
    nr = torch.tensor(n_rel, dtype=torch.float64)
    out = {}
    for name in metrics:
        for k in ks:
            out[f"{name}@{k}"] = float(_ir_metric(name, ranked[:, :k], ideal[:, :k], nr).mean())
    return out


@torch.no_grad()
def mean_rank_variance(ranks: Tensor) -> float:
    """Mean Rank Variance (Nie et al., KDD 2024, 1-to-K contrastive learning).

    ``ranks`` is ``(N, L)``: 1-based rank ``R_{i,l}`` of instance ``i``'s correct item in
    language ``l``. ``MRV = (1/N) sum_i (1/L) sum_l (R_{i,l} - mean_l R_{i,l})^2`` (population
    variance per instance, averaged). Lower = more consistent across languages; ``L = 1`` gives 0.
    """
    ranks = _check_ranks(ranks, ndim=2)
    if (ranks < 1).any():
        raise ValueError(f"ranks must be 1-based (>= 1), got min {ranks.min().item()}")
    return float(ranks.double().var(dim=1, unbiased=False).mean())
