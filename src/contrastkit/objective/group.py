"""The objective kit's single door to :mod:`contrastkit.distributed`.

An objective computes over a process group only if it says so where it is defined:

* :func:`exact_objective` (re-exported from ``contrastkit.distributed``): the objective computes
  every batch-level quantity (counts, temperatures, labels, weights, sums) through the helpers
  below with the group it obtains from :func:`objective_group`, so its value under a group is
  the loss of the global batch;
* :func:`rank_local_objective`: the objective needs data no helper can exchange (a batch-hard
  search over every pair, a prototype computed from the batch): under a group it raises a
  ``ValueError`` unless the caller asks for a per-rank loss with
  ``with contrastkit.distributed.local():``.

Every helper receives the group explicitly: ``group=`` is a required keyword (the
:class:`Context` returned by :func:`objective_group`, ``None`` for this rank's batch only, or
:data:`ACTIVE` to look it up at that point); nothing reads the caller's module or stack frames.
Without ``torch.distributed`` (or with one rank) every helper is the identity.
"""

from __future__ import annotations

import functools
from typing import Optional

from torch import Tensor

from ..distributed import _ops
from ..distributed._ops import Context, exact_objective

__all__ = [
    "ACTIVE",
    "Context",
    "check_has_negatives",
    "exact_objective",
    "gather_rows",
    "global_rows",
    "global_total",
    "local_contrast",
    "objective_group",
    "rank_local_objective",
    "replicated",
    "resolve_group",
    "row_offset",
    "run",
    "sum_across_ranks",
]


class _Active:
    """Default of the helpers' ``group=`` argument: the group of the running objective."""

    def __repr__(self) -> str:
        return "ACTIVE"


#: the group of the running objective (what :func:`objective_group` returns)
ACTIVE = _Active()


def objective_group() -> Optional[Context]:
    """The process group the running objective computes over, ``None`` when it runs locally.

    Inside an objective declared with :func:`exact_objective` this is the active group of
    :func:`contrastkit.distributed.group` (by default the world group when ``torch.distributed``
    is initialised with more than one rank). Anywhere else under an active group it raises a
    ``ValueError``: code that is not declared exact would otherwise compute a per-rank loss
    without a word.
    """
    ctx = _ops.current()
    if ctx is None:
        return None
    if _ops.active_objective() is not None:
        return ctx
    raise _ops.not_supported("an objective not declared with exact_objective")


def resolve_group(group) -> Optional[Context]:
    """``group`` itself, or :func:`objective_group` for :data:`ACTIVE`."""
    return objective_group() if group is ACTIVE else group


def rank_local_objective(fn):
    """Declare an objective that is computed on this rank's batch only.

    Under an active process group the call raises a ``ValueError`` that says how to ask for the
    per-rank loss explicitly (``with contrastkit.distributed.local():``), instead of returning
    a loss that differs from the single-process loss of the global batch.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = _ops.current()
        if ctx is not None and ctx.world > 1:
            raise _ops.not_supported(f"{fn.__name__} (computed on one rank's batch only)")
        return fn(*args, **kwargs)

    wrapper.exact_under_group = False  # type: ignore[attr-defined]
    return wrapper


def global_rows(n: int, *, group) -> int:
    """The number of rows over every rank of ``group`` (``n`` locally)."""
    ctx = resolve_group(group)
    return n if ctx is None else _ops.global_int(ctx, n)


def replicated(x: Tensor, *, group) -> Tensor:
    """A tensor every rank holds a copy of (a temperature, a bias): under a group its gradient
    becomes that of the global loss on every rank (identity locally)."""
    ctx = resolve_group(group)
    return x if ctx is None else _ops.replicated(ctx, x)


def gather_rows(x: Tensor, name: str = "x", *, group) -> Tensor:
    """Rank-major concatenation of ``x`` over ``group`` (gradients flow back); ``x`` itself
    locally. Every rank must pass the same shape (checked, ValueError on every rank)."""
    ctx = resolve_group(group)
    return x if ctx is None else _ops.gather(ctx, x, check=name)


def row_offset(n: int, *, group) -> int:
    """Global index of this rank's first row (``rank * n``; 0 locally)."""
    ctx = resolve_group(group)
    return 0 if ctx is None else ctx.rank * n


def sum_across_ranks(x: Tensor, name: str = "x", *, group) -> Tensor:
    """Sum over the ranks of ``group``, gradients all-reduced back (``x`` locally). Every rank
    must pass the same shape (checked, ValueError on every rank)."""
    ctx = resolve_group(group)
    if ctx is None:
        return x
    _ops.check_same(ctx, **{name: x})
    return _ops.sum_across(ctx, x)


def global_total(x: Tensor, *, group) -> Tensor:
    """For an objective whose rows need no other rank's data (computed without :func:`run`):
    under a group the scalar loss becomes the sum over ranks (the global loss on every rank)
    and per-row outputs get the group's gradient convention; identity locally."""
    ctx = resolve_group(group)
    return x if ctx is None else _ops.global_loss_checked(ctx, x)


def check_has_negatives(name: str, x: Tensor, objective: str, unit: str = "row", *, group) -> None:
    """A batch of one has no negatives: ``ValueError`` when ``x`` has a single row (sample),
    unless other ranks of ``group`` contribute candidates (no collective)."""
    if x.shape[0] >= 2:
        return
    ctx = _ops.current() if group is ACTIVE else group
    if ctx is not None and ctx.world > 1:
        return
    raise ValueError(
        f"{name} has {x.shape[0]} {unit}: {objective} needs at least 2 {unit}s (a batch with no "
        f"negatives), got shape {tuple(x.shape)}"
    )


def local_contrast(*args, group, **kwargs):
    """``engine.contrast`` for objectives that reduce the engine's rows themselves (not through
    :func:`run`): they are per-rank only, so under a process group this raises instead of
    silently computing a per-rank loss."""
    from ..engine import contrast

    what = "an objective that reduces the engine's rows itself"
    if group is ACTIVE:
        ctx = _ops.current()
        if ctx is not None and ctx.world > 1:
            raise _ops.not_supported(what)
    elif group is not None:
        raise _ops.not_supported(what)
    return contrast(*args, **kwargs)


def run(
    anchors: Tensor,
    candidates: Tensor,
    spec,
    k: Tensor,
    reduction: str,
    engine_kw: dict,
    *,
    group,
):
    """Hand a spec to the engine (over ``group`` when one is given); for ``reduction="none"``
    add each row's and column's terms (the objective's row and column functions already carry
    their weights, e.g. 1/2 each)."""
    from ..engine import contrast

    ctx = resolve_group(group)
    if ctx is not None:
        from ..distributed._run import run_distributed

        return run_distributed(ctx, anchors, candidates, spec, k, reduction, engine_kw)
    out = contrast(anchors, candidates, spec, k, reduce=reduction != "none", **engine_kw)
    if reduction != "none":
        return out
    rows, cols = out
    return rows if cols is None else rows + cols[: rows.shape[0]]
