"""Semi-hard negative mining (FaceNet, Schroff et al., arXiv:1503.03832).

For every anchor-positive pair ``(a, p)`` (same label, ``p != a``) the semi-hard negatives are
the different-label rows ``n`` farther from the anchor than the positive but within the margin::

    D_ap < D_an <= D_ap + margin

(the triplet loss ``max(0, D_ap - D_an + margin)`` is still positive, yet the negative is not the
hardest one, which is often a false negative or collapses training). Two selections:

* ``select="all"``: every triplet in the band (pytorch-metric-learning's
  ``TripletMarginMiner(type_of_triplets="semihard")``);
* ``select="one"``: per pair, the closest negative with ``D_an > D_ap`` (margin not applied),
  or the farthest negative when there is none (TF-Addons / sentence-transformers
  ``BatchSemiHardTripletLoss``).

Distances are computed in blocks of anchor rows; memory O(b M^2) per block for the band test
(b chosen so that a block holds about 4M entries), never all triplets at once.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import check_compatible, check_embeddings, check_labels, check_number

__all__ = ["SemiHardMiner"]

_SELECT = ("all", "one")
_DISTANCES = ("euclidean", "squared")


class SemiHardMiner:
    """Semi-hard triplets ``(anchor, positive, negative)`` of a labelled batch.

    Args:
        margin: the band width ``alpha`` (FaceNet 0.2; pytorch-metric-learning's default 0.2;
            sentence-transformers' ``BatchSemiHardTripletLoss`` 5 on raw embeddings).
        select: ``"all"`` (every triplet with ``D_ap < D_an <= D_ap + margin``, as
            pytorch-metric-learning) or ``"one"`` (per positive pair the closest negative with
            ``D_an > D_ap``; ``fallback``: the farthest negative when none is farther than the
            positive, as TF-Addons and sentence-transformers).
        fallback: with ``select="one"``, keep pairs without a negative beyond the positive by
            using their farthest negative (``True``, TF-Addons) or drop them (``False``).
        distance: ``"euclidean"`` (L2, pytorch-metric-learning's ``LpDistance`` and TF-Addons)
            or ``"squared"`` (squared L2, the FaceNet paper).
        normalize: L2-normalise the embeddings first (pytorch-metric-learning's default and
            FaceNet; sentence-transformers uses the raw embeddings: ``False``).
        chunk_size: anchor rows per block (default: about 4M band entries per block).

    ``__call__(embeddings, labels, ref_embeddings=None, ref_labels=None)`` returns three long
    tensors ``(anchors, positives, negatives)`` of equal length, sorted by anchor, then
    positive, then negative; indices of ``positives`` and ``negatives`` are rows of
    ``ref_embeddings`` (default: ``embeddings`` itself, then a row is never its own positive).
    Nothing requires grad; gather the rows for a triplet loss.
    """

    def __init__(
        self,
        margin: float = 0.2,
        *,
        select: str = "all",
        fallback: bool = True,
        distance: str = "euclidean",
        normalize: bool = True,
        chunk_size: Optional[int] = None,
    ):
        self.margin = check_number("margin", margin, minimum=0.0)
        if select not in _SELECT:
            raise ValueError(f"select must be one of {_SELECT}, got {select!r}")
        if distance not in _DISTANCES:
            raise ValueError(f"distance must be one of {_DISTANCES}, got {distance!r}")
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
        self.select = select
        self.fallback = bool(fallback)
        self.distance = distance
        self.normalize = normalize
        self.chunk_size = chunk_size

    def _distances(self, x: Tensor, y: Tensor) -> Tensor:
        d = torch.cdist(x, y)
        return d * d if self.distance == "squared" else d

    def __call__(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_embeddings: Optional[Tensor] = None,
        ref_labels: Optional[Tensor] = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        check_embeddings("embeddings", embeddings)
        N = embeddings.shape[0]
        check_labels("labels", labels, N, embeddings)
        same_set = ref_embeddings is None
        if ref_embeddings is None:
            if ref_labels is not None:
                raise ValueError("ref_labels given without ref_embeddings")
            ref_embeddings, ref_labels = embeddings, labels
        else:
            check_embeddings("ref_embeddings", ref_embeddings)
            check_compatible("embeddings", embeddings, "ref_embeddings", ref_embeddings)
            if ref_labels is None:
                raise ValueError("ref_embeddings needs ref_labels")
        assert ref_embeddings is not None and ref_labels is not None
        M = ref_embeddings.shape[0]
        check_labels("ref_labels", ref_labels, M, ref_embeddings)
        x, y = embeddings.detach(), ref_embeddings.detach()
        if self.normalize:
            x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
        b = self.chunk_size or max(1, (1 << 22) // max(M * M, 1))
        out_a, out_p, out_n = [], [], []
        for r0 in range(0, N, b):
            r1 = min(N, r0 + b)
            D = self._distances(x[r0:r1], y)  # (b, M)
            same = labels[r0:r1, None] == ref_labels[None, :]
            pos, neg = same.clone(), ~same
            if same_set:
                rows = torch.arange(r1 - r0, device=D.device)
                pos[rows, rows + r0] = False
            if self.select == "all":
                a, p, n = self._band(D, pos, neg)
            else:
                a, p, n = self._closest_beyond(D, pos, neg)
            out_a.append(a + r0)
            out_p.append(p)
            out_n.append(n)
        return torch.cat(out_a), torch.cat(out_p), torch.cat(out_n)

    def _band(self, D: Tensor, pos: Tensor, neg: Tensor):
        # (b, M_p, M_n): D_an - D_ap in (0, margin], as pytorch-metric-learning compares it
        gap = D[:, None, :] - D[:, :, None]
        ok = pos[:, :, None] & neg[:, None, :] & (gap > 0) & (gap <= self.margin)
        a, p, n = ok.nonzero(as_tuple=True)
        return a, p, n

    def _closest_beyond(self, D: Tensor, pos: Tensor, neg: Tensor):
        a, p = pos.nonzero(as_tuple=True)  # every positive pair, sorted
        Da = D[a]  # (P, M) distances of the pair's anchor
        negs = neg[a]
        beyond = negs & (Da > D[a, p][:, None])
        inf = torch.tensor(float("inf"), dtype=D.dtype, device=D.device)
        closest = torch.where(beyond, Da, inf).argmin(1)
        farthest = torch.where(negs, Da, -inf).argmax(1)
        has_beyond = beyond.any(1)
        n = torch.where(has_beyond, closest, farthest)
        keep = negs.any(1) & (has_beyond | self.fallback)
        return a[keep], p[keep], n[keep]

    def __repr__(self) -> str:
        return (
            f"SemiHardMiner(margin={self.margin}, select={self.select!r}, "
            f"fallback={self.fallback}, distance={self.distance!r}, normalize={self.normalize})"
        )
