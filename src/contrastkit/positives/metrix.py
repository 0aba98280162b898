"""Metrix: mixup for deep metric learning (Venkataramanan et al., "It Takes Two to Tango: Mixup
for Deep Metric Learning", ICLR 2022; official code billpsomas/Metrix_ICLR22).

A mixture ``x~ = lam x_1 + (1 - lam) x_2`` of a positive and a negative of anchor ``a`` is
"positive with weight lam": any pair loss split into ``l+`` and ``l-`` gives
``lam * mean l+(a, x~) + (1 - lam) * mean l-(a, x~)``. With the contrastive loss
(``l+ = relu(d - m+)``, ``l- = relu(m- - d)``, ``d`` the Euclidean distance of L2-normalised
embeddings as pytorch-metric-learning's ``ContrastiveLoss``; m+ = 0, m- = 0.5) and
``lam ~ Beta(2, 2)`` one per iteration. Mixing types (drawn uniformly per iteration):

* type 0: every positive pair (a, p) with every negative n of a: ``x~ = lam p + (1 - lam) n``;
* type 1: the anchor with each of its negatives: ``x~ = lam a + (1 - lam) n``.

``pairs`` gives the index triples, so the same mixture can be formed on inputs or intermediate
features (the official ``input`` / ``feature`` modes re-run the network on the mixtures, with
``hardest_only=True``: one hardest negative per anchor); ``__call__`` is the ``embed`` mode.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import check_embeddings, check_labels
from ._random import beta

__all__ = ["Metrix"]


class Metrix:
    """``__call__(embeddings, labels, generator=None, lam=None, mix_type=None)`` -> the weighted
    mixed term ``weight * L_mix`` (add it to the clean loss).

    Args:
        alpha: Beta(alpha, alpha) for lam (2.0); weight: w (0.4); pos_margin, neg_margin:
            contrastive-loss margins (0, 0.5); mix_type: 0, 1 or "random" (per call);
        hardest_only: one (hardest) negative per anchor; reducer: "mean" over mixed pairs or
            "nonzero" (mean over non-zero terms, pytorch-metric-learning's AvgNonZeroReducer);
        exclude_anchors_with_positives: type-1 quirk of the official code (off).
    """

    def __init__(
        self,
        alpha: float = 2.0,
        weight: float = 0.4,
        *,
        pos_margin: float = 0.0,
        neg_margin: float = 0.5,
        mix_type="random",
        hardest_only: bool = False,
        reducer: str = "mean",
        exclude_anchors_with_positives: bool = False,
    ):
        if mix_type not in (0, 1, "random"):
            raise ValueError(f"mix_type must be 0, 1 or 'random', got {mix_type!r}")
        if reducer not in ("mean", "nonzero"):
            raise ValueError(f"reducer must be 'mean' or 'nonzero', got {reducer!r}")
        if not isinstance(alpha, (int, float)) or alpha <= 0:
            raise ValueError(f"alpha must be a number > 0, got {alpha!r}")
        self.alpha, self.weight = float(alpha), float(weight)
        self.pos_margin, self.neg_margin = float(pos_margin), float(neg_margin)
        self.mix_type, self.hardest_only, self.reducer = mix_type, hardest_only, reducer
        self.exclude_anchors_with_positives = exclude_anchors_with_positives
        self.last: dict = {}

    def pairs(self, embeddings: Tensor, labels: Tensor, mix_type: int):
        """Triples ``(anchor, first, second)``: mixture ``lam x[first] + (1-lam) x[second]``."""
        n = embeddings.shape[0]
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(n, dtype=torch.bool, device=labels.device)
        pos, neg = same & ~eye, ~same
        if self.hardest_only:
            x = F.normalize(embeddings.detach(), dim=-1)
            dist = torch.cdist(x, x).masked_fill(~neg, float("inf"))
            hard = dist.argmin(1)
            neg = torch.zeros_like(neg)
            has = torch.isfinite(dist.min(1).values)
            neg[has, hard[has]] = True
        if mix_type == 0:
            a, p = pos.nonzero(as_tuple=True)
            n_of = neg[a]  # (P, n): negatives of each pair's anchor
            r, nn_ = n_of.nonzero(as_tuple=True)
            return a[r], p[r], nn_
        anchors = torch.ones(n, dtype=torch.bool, device=labels.device)
        if self.exclude_anchors_with_positives:
            anchors = ~pos.any(1)
        a, nn_ = (neg & anchors[:, None]).nonzero(as_tuple=True)
        return a, a, nn_

    @staticmethod
    def mix(x: Tensor, first: Tensor, second: Tensor, lam: float) -> Tensor:
        """``lam x[first] + (1 - lam) x[second]`` on any tensor (inputs, features, embeddings)."""
        return lam * x[first] + (1 - lam) * x[second]

    def _reduce(self, v: Tensor) -> Tensor:
        if v.numel() == 0:
            return v.sum()
        if self.reducer == "mean":
            return v.mean()
        nz = v > 0
        return v[nz].mean() if bool(nz.any()) else v.sum() * 0

    def mixed_loss(self, anchor: Tensor, mixed: Tensor, lam: float) -> Tensor:
        """``lam mean relu(d - m+) + (1 - lam) mean relu(m- - d)``, d of normalised rows."""
        d = (F.normalize(anchor, dim=-1) - F.normalize(mixed, dim=-1)).norm(dim=-1)
        lp = F.relu(d - self.pos_margin)
        ln = F.relu(self.neg_margin - d)
        return lam * self._reduce(lp) + (1 - lam) * self._reduce(ln)

    def __call__(
        self,
        embeddings: Tensor,
        labels: Tensor,
        generator: Optional[torch.Generator] = None,
        lam: Optional[float] = None,
        mix_type: Optional[int] = None,
    ) -> Tensor:
        check_embeddings("embeddings", embeddings)
        check_labels("labels", labels, embeddings.shape[0], embeddings)
        if mix_type is None:
            mix_type = self.mix_type
        if mix_type == "random":
            mix_type = int(torch.randint(2, (), generator=generator))
        if mix_type not in (0, 1):
            raise ValueError(f"mix_type must be 0 or 1, got {mix_type!r}")
        if lam is None:
            lam = float(beta(self.alpha, self.alpha, (), generator, embeddings))
        elif not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {lam}")
        a, f, s = self.pairs(embeddings, labels, mix_type)
        self.last = {"lam": lam, "mix_type": mix_type, "n_pairs": int(a.numel())}
        mixed = self.mix(embeddings, f, s, lam)
        return self.weight * self.mixed_loss(embeddings[a], mixed, lam)
