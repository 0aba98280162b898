"""Synthetic negatives: MoCHi hard-negative mixing, KaLM-V2 online mixing, negative interpolation.

Every synthetic vector is a detached constant (never enqueued) returned as per-anchor negatives
``(N, s, d)`` for :func:`contrastkit.losses.info_nce_with_negatives` (``extra=``) or
``info_nce(..., negatives=)``. Random draws are made on the CPU from the ``generator`` passed to
the call (a CPU ``torch.Generator``; default the global one) and moved to the data's device, so
a seed gives the same synthetic vectors on every device.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import check_compatible, check_embeddings, check_index

__all__ = ["HardNegativeMixing", "OnlineHardNegativeMixing", "interpolate_negatives"]


def _nonneg_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    return v


def _hardest(q: Tensor, negs: Tensor, n_hard: int, exclude: Optional[Tensor]) -> Tensor:
    """Indices (N, n_hard) of the most similar negatives; negs (K, d) shared or (N, H, d)."""
    if negs.dim() == 2:
        s = q @ negs.T
        if exclude is not None:
            s = s.scatter(1, exclude[:, None], float("-inf"))
    else:
        s = torch.einsum("nd,nhd->nh", q, negs)
    return torch.topk(s, n_hard, dim=1).indices


class HardNegativeMixing:
    """MoCHi (Kalantidis et al., "Hard Negative Mixing for Contrastive Learning", NeurIPS 2020).

    For query ``q_i`` with hardest negatives ``H_i`` (the ``n_hard`` most similar, selected on
    detached scores)::

        type 1 (n_mix times):        h  = normalize(a n_a + (1 - a) n_b),  a ~ U(0, 1),  a, b ~ H_i
        type 2 (n_query_mix times):  h' = normalize(b q_i + (1 - b) n_c), b ~ U(0, 0.5), c ~ H_i

    (``a``, ``b``, ``c`` uniform with replacement; one coefficient per synthetic vector.)
    Returns ``(N, n_mix + n_query_mix, d)``, unit norm, detached (type 2 included). Paper
    configurations MoCHi(N, s, s'): (256, 512, 0), (256, 512, 256), (128, 1024, 512) on ImageNet.
    No official code; the warm-up ``start_step`` (no synthesis before it) defaults to 0.

    ``__call__(query, negatives, step=None, exclude=None, generator=None)``: ``negatives`` is a
    queue snapshot (K, d) shared by all queries or per-query negatives (N, H, d); ``exclude``
    (N,) names one column of a shared bank per query that must not be mixed (its positive).
    Before ``start_step`` it returns ``(N, 0, d)``.
    """

    def __init__(
        self,
        n_hard: int = 256,
        n_mix: int = 512,
        n_query_mix: int = 256,
        *,
        start_step: int = 0,
        normalize: bool = True,
    ):
        if _nonneg_int("n_hard", n_hard) < 1:
            raise ValueError(f"n_hard must be >= 1, got {n_hard}")
        self.n_hard = n_hard
        self.n_mix = _nonneg_int("n_mix", n_mix)
        self.n_query_mix = _nonneg_int("n_query_mix", n_query_mix)
        self.start_step = _nonneg_int("start_step", start_step)
        self.normalize = normalize

    def hardest(self, query: Tensor, negatives: Tensor, exclude: Optional[Tensor] = None):
        """Indices (N, n_hard) of each query's hardest negatives (into K, or into H)."""
        q, negs = self._prepare(query, negatives, exclude)
        return _hardest(q, negs, self.n_hard, exclude)

    def _prepare(self, query, negatives, exclude):
        check_embeddings("query", query)
        check_embeddings("negatives", negatives, ndim=(2, 3))
        check_compatible("query", query, "negatives", negatives)
        N = query.shape[0]
        if negatives.dim() == 3 and negatives.shape[0] != N:
            raise ValueError(
                f"per-query negatives must have shape (N={N}, H, d), got {tuple(negatives.shape)}"
            )
        avail = negatives.shape[-2] if negatives.dim() == 3 else negatives.shape[0]
        if exclude is not None:
            if negatives.dim() != 2:
                raise ValueError("exclude only applies to a shared (K, d) bank")
            check_index("exclude", exclude, negatives.shape[0], shape=(N,), ref=query)
            avail -= 1
        if self.n_hard > avail:
            raise ValueError(
                f"n_hard={self.n_hard} is larger than the {avail} negatives available per query "
                f"(negatives {tuple(negatives.shape)})"
            )
        q = query.detach()
        negs = negatives.detach()
        if self.normalize:
            q, negs = F.normalize(q, dim=-1), F.normalize(negs, dim=-1)
        return q, negs

    def __call__(
        self,
        query: Tensor,
        negatives: Tensor,
        step: Optional[int] = None,
        exclude: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Tensor:
        q, negs = self._prepare(query, negatives, exclude)
        N, d = q.shape
        if (step is not None and step < self.start_step) or self.n_mix + self.n_query_mix == 0:
            return q.new_zeros(N, 0, d)
        hard = _hardest(q, negs, self.n_hard, exclude)  # (N, n_hard)

        def pick(count):  # hard negatives (N, count, d) drawn uniformly from H_i
            j = torch.randint(self.n_hard, (N, count), generator=generator).to(q.device)
            idx = hard.gather(1, j)
            if negs.dim() == 2:
                return negs[idx]
            return negs.gather(1, idx[..., None].expand(N, count, d))

        out = []
        if self.n_mix:
            a, b = pick(self.n_mix), pick(self.n_mix)
            alpha = torch.rand(N, self.n_mix, 1, generator=generator, dtype=q.dtype).to(q.device)
            out.append(alpha * a + (1 - alpha) * b)
        if self.n_query_mix:
            c = pick(self.n_query_mix)
            beta = 0.5 * torch.rand(N, self.n_query_mix, 1, generator=generator, dtype=q.dtype).to(
                q.device
            )
            out.append(beta * q[:, None] + (1 - beta) * c)
        return F.normalize(torch.cat(out, dim=1), dim=-1)

    def __repr__(self) -> str:
        return (
            f"HardNegativeMixing(n_hard={self.n_hard}, n_mix={self.n_mix}, "
            f"n_query_mix={self.n_query_mix}, start_step={self.start_step})"
        )


class OnlineHardNegativeMixing:
    """Online hard-negative mixing for retrieval fine-tuning (KaLM-Embedding-V2, Zhao et al. 2025,
    arXiv:2506.20923).

    No official code; reconstructed from the paper: the candidates of query ``i`` are its own mined
    hard negatives and every other query's positive and hard negatives; the ``n_hard`` most similar
    are mixed pairwise (MoCHi type 1, ``n_mix`` per query) and optionally with the query
    (``n_query_mix``, default 0). ``__call__(query, positive, hard_negatives=None,
    generator=None)`` with ``positive`` (N, d), ``hard_negatives`` (N, H, d); returns detached
    unit vectors (N, n_mix + n_query_mix, d).
    """

    def __init__(self, n_hard: int = 7, n_mix: int = 7, n_query_mix: int = 0):
        self._mixer = HardNegativeMixing(n_hard, n_mix, n_query_mix)

    def __call__(
        self,
        query: Tensor,
        positive: Tensor,
        hard_negatives: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Tensor:
        check_embeddings("positive", positive)
        check_embeddings("query", query)
        check_compatible("query", query, "positive", positive, same_rows=True)
        N = query.shape[0]
        pool = [positive]
        if hard_negatives is not None:
            check_embeddings("hard_negatives", hard_negatives, ndim=3)
            check_compatible("query", query, "hard_negatives", hard_negatives)
            if hard_negatives.shape[0] != N:
                raise ValueError(
                    f"hard_negatives must have shape (N={N}, H, d), got "
                    f"{tuple(hard_negatives.shape)}"
                )
            pool.append(hard_negatives.reshape(-1, query.shape[1]))
        bank = torch.cat(pool)  # column i (< N) is query i's own positive
        own = torch.arange(N, device=query.device)
        return self._mixer(query, bank, exclude=own, generator=generator)


def interpolate_negatives(
    negatives: Tensor,
    lam,
    permutation: Optional[Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Negative interpolation of Feature Transformation (Zhu et al., ICCV 2021):
    ``Q' = lam Q + (1 - lam) Q[pi]`` with a random permutation ``pi`` of the K rows (or the one
    given). ``lam`` is a number (one per step, the official recipe) or a tensor broadcastable to
    ``Q`` (per-row or per-element masks). Not re-normalised."""
    check_embeddings("negatives", negatives)
    K = negatives.shape[0]
    if permutation is None:
        permutation = torch.randperm(K, generator=generator).to(negatives.device)
    else:
        check_index("permutation", permutation, K, shape=(K,), ref=negatives, what="negatives")
    return lam * negatives + (1 - lam) * negatives[permutation]
