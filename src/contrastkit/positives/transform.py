"""Feature Transformation (Zhu, Zhao, Liu, Sun, Chen, "Improving Contrastive Learning by
Visualizing Feature Transformation", ICCV 2021; official code
DTennant/CL-Visualizing-Feature-Transformation, ``memory/mem_moco.py`` ``RGBMoCo_dropmix_norm``).

Positive extrapolation and negative interpolation of a MoCo step::

    q' = lam_p q + (1 - lam_p) k,   k' = lam_p k + (1 - lam_p) q,   lam_p = 1 + Beta(2, 2)
    Q' = lam_n Q + (1 - lam_n) Q[pi],                                lam_n = Beta(1.6, 1.6)

so ``q' - k' = (2 lam_p - 1)(q - k)`` (a harder positive) and ``q' + k' = q + k``. One scalar per
step by default (``dim_mask="none"``, the official recipe); ``dim_mask`` in {"pos", "neg", "both"}
draws one value per element instead. Not re-normalised unless ``renormalize`` says so. The logits
are ``[q'.k', q' Q'^T] / tau``; enqueue the **original** keys. (Official quirk: without a gathered
``all_k`` the code enqueues the transformed key ``k'``; we leave the queue to the caller.)
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import check_compatible, check_embeddings
from ..negatives.mixing import interpolate_negatives
from ._random import beta

__all__ = ["FeatureTransformation", "extrapolate_positives"]


def extrapolate_positives(query: Tensor, key: Tensor, lam) -> tuple[Tensor, Tensor]:
    """``(lam q + (1 - lam) k, lam k + (1 - lam) q)``; ``lam > 1`` extrapolates (harder pair),
    ``lam in (0, 1)`` interpolates. ``lam`` a number or a tensor broadcastable to ``query``."""
    check_embeddings("query", query)
    check_embeddings("key", key)
    check_compatible("query", query, "key", key, same_rows=True)
    return lam * query + (1 - lam) * key, lam * key + (1 - lam) * query


class FeatureTransformation:
    """Positive extrapolation + negative interpolation for a MoCo step.

    Args:
        pos_alpha, neg_alpha: Beta parameters (official 2.0 and 1.6).
        extrapolate: ``lam_p = 1 + Beta`` (official on); off: ``lam_p = Beta`` (interpolation).
        target: ``"posneg"`` (both, official), ``"pos"`` or ``"neg"`` only.
        distribution: ``"beta"`` (official) or ``"uniform"`` (``U(0, 1)`` masks).
        dim_mask: ``"none"`` (one scalar per step, official), ``"pos"``, ``"neg"``, ``"both"``
            (one value per element of the named tensors).
        renormalize: ``"none"`` (official), ``"pos"``, ``"neg"``, ``"both"``.

    ``__call__(query, key, queue, generator=None)`` -> ``(q', k', Q')``; the key and queue are
    detached (as in MoCo), ``k'`` keeps its gradient path through ``query``. The last draws are
    kept in ``last_lambda``.
    """

    def __init__(
        self,
        pos_alpha: float = 2.0,
        neg_alpha: float = 1.6,
        *,
        extrapolate: bool = True,
        target: str = "posneg",
        distribution: str = "beta",
        dim_mask: str = "none",
        renormalize: str = "none",
    ):
        for name, v, allowed in (
            ("target", target, ("pos", "neg", "posneg")),
            ("distribution", distribution, ("beta", "uniform")),
            ("dim_mask", dim_mask, ("none", "pos", "neg", "both")),
            ("renormalize", renormalize, ("none", "pos", "neg", "both")),
        ):
            if v not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {v!r}")
        for name, v in (("pos_alpha", pos_alpha), ("neg_alpha", neg_alpha)):
            if not isinstance(v, (int, float)) or v <= 0:
                raise ValueError(f"{name} must be a number > 0, got {v!r}")
        self.pos_alpha, self.neg_alpha = float(pos_alpha), float(neg_alpha)
        self.extrapolate, self.target = extrapolate, target
        self.distribution, self.dim_mask, self.renormalize = distribution, dim_mask, renormalize
        self.last_lambda: dict = {}

    def _draw(self, alpha: float, shape, like: Tensor, generator) -> Tensor:
        if self.distribution == "uniform":
            return torch.rand(shape, generator=generator, dtype=like.dtype).to(like.device)
        return beta(alpha, alpha, shape, generator, like)

    def __call__(
        self,
        query: Tensor,
        key: Tensor,
        queue: Tensor,
        generator: Optional[torch.Generator] = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        check_embeddings("query", query)
        check_embeddings("key", key)
        check_compatible("query", query, "key", key, same_rows=True)
        check_embeddings("queue", queue)
        check_compatible("query", query, "queue", queue)
        key, queue = key.detach(), queue.detach()
        q, k, Q = query, key, queue
        self.last_lambda = {}
        if self.target in ("pos", "posneg"):
            shape = query.shape if self.dim_mask in ("pos", "both") else ()
            lam = self._draw(self.pos_alpha, shape, query, generator)
            if self.extrapolate:
                lam = lam + 1
            q, k = extrapolate_positives(query, key, lam)
            self.last_lambda["pos"] = lam
        if self.target in ("neg", "posneg"):
            shape = queue.shape if self.dim_mask in ("neg", "both") else ()
            lam = self._draw(self.neg_alpha, shape, queue, generator)
            perm = torch.randperm(queue.shape[0], generator=generator).to(queue.device)
            Q = interpolate_negatives(queue, lam, perm)
            self.last_lambda["neg"], self.last_lambda["perm"] = lam, perm
        if self.renormalize in ("pos", "both"):
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        if self.renormalize in ("neg", "both"):
            Q = F.normalize(Q, dim=-1)
        return q, k, Q
