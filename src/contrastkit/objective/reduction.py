"""One reduction rule for every objective: ``"mean"`` over the rows that carry a loss term,
``"sum"``, or ``"none"`` (the per-row terms).

An empty batch (no row carries a term, e.g. no anchor has a positive) reduces to 0 for both
``"mean"`` and ``"sum"``, with a gradient of 0, never to NaN. Under a process group the mean is
over the global count of rows.
"""

from __future__ import annotations

from typing import Union

from torch import Tensor

from .._validation import check_reduction
from .group import global_total, resolve_group

__all__ = ["REDUCTIONS", "reduce", "row_weight"]

#: the reductions every per-sample objective accepts
REDUCTIONS = ("mean", "sum", "none")


def row_weight(reduction: str, count: Union[int, Tensor], min_count: int = 0, *, group):
    """The factor that turns per-row terms into the requested reduction when they are summed.

    ``count`` is this rank's number of rows (under ``group`` the mean is over the global
    count); an empty batch gets factor 1 (its sum, 0). Engine objectives multiply their
    ``row_fn`` by it, so that the engine's sum is the reduced loss.
    """
    check_reduction(reduction)
    if reduction != "mean":
        return 1.0
    ctx = resolve_group(group)
    if ctx is not None:
        from ..distributed._ops import global_int

        count = global_int(ctx, int(count))
    return 1.0 / max(int(count), min_count, 1)


def reduce(rows: Tensor, reduction: str, count=None, *, group, min_count: int = 0) -> Tensor:
    """Reduce per-row terms computed without the engine.

    ``"none"`` returns ``rows``; ``"sum"`` their sum; ``"mean"`` the sum divided by ``count``
    (default: the number of rows; over every rank of ``group``). Under a group the scalar
    becomes the global loss on every rank (:func:`~contrastkit.objective.group.global_total`).
    An empty batch gives 0.
    """
    check_reduction(reduction)
    ctx = resolve_group(group)
    if reduction == "none":
        return rows if ctx is None else global_total(rows, group=ctx)
    n = rows.shape[0] if count is None else count
    w = row_weight(reduction, n, min_count, group=ctx)
    return global_total(rows.sum() * w, group=ctx)
