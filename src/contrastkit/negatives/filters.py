"""False-negative filters: which candidates are too similar to the query to be trusted as negatives.

Every filter returns a **drop mask** (True = the candidate is a probable false negative and must not
be used as a negative) of the same shape as ``scores`` (``(N, M)`` or ``(N, k)``), given the rows'
reference positive scores ``(N,)`` where the rule needs them. Rules (sentence-transformers
``mine_hard_negatives`` conventions):

* threshold:        drop ``s > max_score`` (and ``s < min_score`` when given);
* absolute margin:  drop ``s + margin > s_pos``  (keep negatives at least ``margin`` below the
  positive; UniME's "``s > s_pos + beta``" rule is ``margin = -beta``);
* relative margin:  drop ``s > s_pos - |s_pos| * r`` ("negative score < 95 % of the positive score"
  is ``r = 0.05``, NV-Retriever's TopK-PercPos). The paper writes ``s_pos (1 - r)``; the
  sentence-transformers code subtracts ``|s_pos| r`` so a negative positive score does not loosen
  the rule; we follow the code (identical for ``s_pos >= 0``).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .._validation import check_index, check_tensor

__all__ = [
    "threshold_filter",
    "margin_filter",
    "relative_margin_filter",
    "FalseNegativeFilter",
    "apply_filter",
]


def _check_scores(scores) -> Tensor:
    # NaN compares False with every bound, so a NaN candidate would never be dropped (kept as a
    # negative): rejected. +-Inf is a well-defined score (e.g. a masked -inf slot) and kept.
    return check_tensor("scores", scores, ndim=2, kind="float", allow_nonfinite="inf")


def _check_positive(scores: Tensor, positive_scores) -> Tensor:
    if positive_scores is None:
        raise ValueError("positive_scores (N,) is required by a margin filter, got None")
    check_tensor(
        "positive_scores",
        positive_scores,
        kind="real",
        shape=scores.shape[:1],
        ref=scores,
        allow_nonfinite="inf",
    )
    return positive_scores.to(scores.dtype)


def _check_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


def threshold_filter(
    scores: Tensor, max_score: Optional[float] = None, min_score: Optional[float] = None
) -> Tensor:
    """Drop mask of ``scores > max_score`` (or ``scores < min_score``)."""
    scores = _check_scores(scores)
    drop = torch.zeros_like(scores, dtype=torch.bool)
    if max_score is not None:
        drop |= scores > _check_number("max_score", max_score)
    if min_score is not None:
        drop |= scores < _check_number("min_score", min_score)
    return drop


def margin_filter(scores: Tensor, positive_scores: Tensor, margin: float) -> Tensor:
    """Drop mask of ``scores + margin > positive_scores[:, None]``."""
    scores = _check_scores(scores)
    pos = _check_positive(scores, positive_scores)
    return scores + _check_number("margin", margin) > pos[:, None]


def relative_margin_filter(
    scores: Tensor, positive_scores: Tensor, relative_margin: float
) -> Tensor:
    """Drop mask of ``scores > s_pos - |s_pos| * relative_margin`` (``0.05``: keep < 95 %)."""
    scores = _check_scores(scores)
    pos = _check_positive(scores, positive_scores)
    r = _check_number("relative_margin", relative_margin)
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"relative_margin must be in [0, 1], got {r}")
    return scores > (pos - pos.abs() * r)[:, None]


class FalseNegativeFilter:
    """All rules at once: ``drop = threshold | absolute margin | relative margin``.

    Args:
        max_score, min_score: absolute thresholds on the candidate score.
        absolute_margin: keep a negative only if ``s + absolute_margin <= s_pos``.
        relative_margin: keep a negative only if ``s <= s_pos - |s_pos| * relative_margin``.

    ``FalseNegativeFilter(relative_margin=0.05)`` is the NV-Embed / NV-Retriever preset;
    ``FalseNegativeFilter(absolute_margin=-0.1)`` is UniME's ``beta = 0.1``.
    """

    def __init__(
        self,
        *,
        max_score: Optional[float] = None,
        min_score: Optional[float] = None,
        absolute_margin: Optional[float] = None,
        relative_margin: Optional[float] = None,
    ):
        for name, v in (
            ("max_score", max_score),
            ("min_score", min_score),
            ("absolute_margin", absolute_margin),
            ("relative_margin", relative_margin),
        ):
            if v is not None:
                _check_number(name, v)
        if relative_margin is not None and not 0.0 <= relative_margin <= 1.0:
            raise ValueError(f"relative_margin must be in [0, 1], got {relative_margin}")
        self.max_score, self.min_score = max_score, min_score
        self.absolute_margin, self.relative_margin = absolute_margin, relative_margin

    @property
    def needs_positive(self) -> bool:
        return self.absolute_margin is not None or self.relative_margin is not None

    @property
    def is_empty(self) -> bool:
        return not self.needs_positive and self.max_score is None and self.min_score is None

    def __call__(self, scores: Tensor, positive_scores: Optional[Tensor] = None) -> Tensor:
        drop = threshold_filter(scores, self.max_score, self.min_score)
        if self.absolute_margin is not None:
            drop |= margin_filter(scores, positive_scores, self.absolute_margin)
        if self.relative_margin is not None:
            drop |= relative_margin_filter(scores, positive_scores, self.relative_margin)
        return drop

    def __repr__(self) -> str:
        opts = ("max_score", "min_score", "absolute_margin", "relative_margin")
        kv = ", ".join(f"{k}={getattr(self, k)!r}" for k in opts if getattr(self, k) is not None)
        return f"FalseNegativeFilter({kv})"


def apply_filter(indices: Tensor, drop: Tensor) -> Tensor:
    """Filtered indices: ``indices`` (N, k) with the dropped entries replaced by ``-1``."""
    check_index("indices", indices, None, ndim=2, allow=(-1,), what="candidates")
    check_tensor("drop", drop, kind="bool")
    if indices.shape != drop.shape:
        raise ValueError(
            f"drop must be a bool tensor shaped like indices {tuple(indices.shape)}, "
            f"got {tuple(drop.shape)} {drop.dtype}"
        )
    return indices.masked_fill(drop, -1)
