"""Objective specifications: what the engine needs to know about one row-wise objective.

The unified row-wise form for anchor ``i`` and candidates ``j``::

    u_ij   = kappa_i * <a_i, b_j>                 (kappa = 1 / temperature, scalar or per row)
    lse_k  = log sum_j w^k_ij exp(r_k * u_ij)     (K log-sum-exp reductions, masked by w^k)
    phi_i  = sum_j softplus(u_ij + bias)          (optional elementwise term, SigLIP)
    tgt_i  = sum_j p_ij u_ij,  mass_i = sum_j p_ij (soft targets evaluated per tile, CWCL)
    mom_i  = sum_j pi_ij u_ij,  pi_i = softmax_j of term 0 (optional first moment, CACR)
    col_lse_j = log sum_i w^0_ij exp(u_ij)        (optional column reduction, symmetric losses)
    ce_i   = lse_0,i - u_i,pos(i)                 (optional: cross-entropy with one positive)

    loss   = sum_i g(row stats_i, side_i)  [+ sum_j g_col(col stats_j, side_j)]

``g`` (``RowSpec.row_fn``) receives the row statistics as a :class:`RowStatistics` record
(``lse``, ``ce``, ``phi``, ``tgt``, ``mass``, ``mom``) and ``g_col`` (``RowSpec.col_fn``) the column
statistics as a :class:`ColumnStatistics` record (``lse`` = ``col_lse`` above, ``tgt``, ``mass``).

Linear target terms with one-hot or label targets (``u_i,pos``, ``sum_{j in P(i)} u_ij``) do not
need the engine at all: they are ``O((N + M) d)`` algebra done with autograd by the objective and
passed to ``g`` as *side inputs*. The engine only sweeps the reductions that need every pair.
The one exception is the cross-entropy with a single positive: ``lse_0,i - u_i,pos(i)`` cancels
badly when the positive dominates the row (near-identical views), so with ``RowSpec.positive``
the engine reads ``u_i,pos(i)`` from the same logit tile as the LSE and reduces
``u_ij - u_i,pos(i)`` directly (as ``F.cross_entropy``'s log-softmax does): the statistic
``ce`` is then as exact as a plain cross-entropy, and exactly 0 when the positive is alone.

Pair functions (masks and soft targets) are evaluated per tile from O(N + M) data (indices,
labels, a second pair of embeddings); a dense ``(N, M)`` mask may be given for convenience.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Callable, Optional, Sequence, TypeVar, Union

import torch
from torch import Tensor

__all__ = [
    "ColumnStatistics",
    "LSETerm",
    "PairMask",
    "RowSpec",
    "RowStatistics",
    "SoftTargets",
    "without_positive",
]


@dataclass(frozen=True)
class PairMask:
    """Which (anchor, candidate) pairs are *excluded* from a reduction, evaluated per tile.

    Parameters
    ----------
    self_offset:
        Column ``i + self_offset`` is anchor ``i`` itself (NT-Xent, SupCon: anchors are also
        candidates). ``None``: no self pair.
    index:
        ``(N,)`` or ``(N, P)`` long tensor of global candidate columns to exclude per row
        (``-1`` entries ignored), e.g. the positive (DCL: positive not in the denominator).
    row_labels, col_labels:
        With ``labels="same"`` exclude pairs with equal labels, ``labels="different"`` keep only
        equal-label pairs. Labels are compared in the tile; no ``N x M`` mask is ever built.
    dense:
        Optional ``(N, M)`` bool tensor, True = excluded (convenience for small problems).
    """

    self_offset: Optional[int] = None
    index: Optional[Tensor] = None
    row_labels: Optional[Tensor] = None
    col_labels: Optional[Tensor] = None
    labels: Optional[str] = None  # None | "same" | "different"
    dense: Optional[Tensor] = None

    @property
    def is_empty(self) -> bool:
        return (
            self.self_offset is None
            and self.index is None
            and self.labels is None
            and self.dense is None
        )

    @property
    def is_sparse(self) -> bool:
        """Only O(1) excluded entries per row (self and/or index): can be set in place."""
        return self.labels is None and self.dense is None

    def sparse_entries(self, r0: int, r1: int, c0: int, c1: int, device) -> tuple[Tensor, Tensor]:
        """(rows, cols) inside the tile, relative to the tile origin, of excluded entries."""
        rows_list, cols_list = [], []
        rows = torch.arange(r0, r1, device=device)
        if self.self_offset is not None:
            cols = rows + self.self_offset
            keep = (cols >= c0) & (cols < c1)
            rows_list.append(rows[keep] - r0)
            cols_list.append(cols[keep] - c0)
        if self.index is not None:
            idx = self.index[r0:r1]
            if idx.dim() == 1:
                idx = idx[:, None]
            rr = rows[:, None].expand_as(idx)
            keep = (idx >= c0) & (idx < c1)
            rows_list.append(rr[keep] - r0)
            cols_list.append(idx[keep] - c0)
        if not rows_list:
            empty = torch.empty(0, dtype=torch.long, device=device)
            return empty, empty
        return torch.cat(rows_list), torch.cat(cols_list)

    def tile(self, r0: int, r1: int, c0: int, c1: int, device) -> Optional[Tensor]:
        """Bool tile (r1 - r0, c1 - c0), True = excluded; None when nothing is excluded."""
        if self.is_empty:
            return None
        out = torch.zeros(r1 - r0, c1 - c0, dtype=torch.bool, device=device)
        rr, cc = self.sparse_entries(r0, r1, c0, c1, device)
        if rr.numel():
            out[rr, cc] = True
        if self.labels is not None:
            assert self.row_labels is not None and self.col_labels is not None  # labels= needs both
            same = self.row_labels[r0:r1, None] == self.col_labels[None, c0:c1]
            out |= same if self.labels == "same" else ~same
        if self.dense is not None:
            out |= self.dense[r0:r1, c0:c1]
        return out


@dataclass(frozen=True)
class LSETerm:
    """One reduction ``lse_i = log sum_j w_ij exp(r * u_ij)``.

    ``w`` is 0 on the pairs ``exclude`` names and otherwise 1, or ``weights(r0, r1, c0, c1)``:
    a per-tile function returning non-negative weights ``(b, t)`` (importance or
    label-distance weights of negatives; no gradient flows into them).
    """

    r: float = 1.0
    exclude: PairMask = field(default_factory=PairMask)
    weights: Optional[Callable[[int, int, int, int], Tensor]] = None


@dataclass(frozen=True)
class SoftTargets:
    """Soft targets ``p_ij`` computed per tile by ``fn(r0, r1, c0, c1) -> (b, t)`` (no gradient).

    The engine accumulates ``tgt_i = sum_j p_ij u_ij`` and ``mass_i = sum_j p_ij`` per row and,
    when the spec has columns, ``col_tgt_j`` and ``col_mass_j`` per column. ``transposed``
    (optional) gives ``p_ji`` for the transposed problem (rows: candidates, columns: anchors);
    contrastkit.distributed needs it for two-sided objectives (the engine itself does not).

    ``logits`` (optional) declares the targets a row softmax: ``logits(r0, r1, c0, c1, out)``
    returns the tile of base-2 logits ``t_ij`` (written into ``out``, a contiguous ``(b, t)``
    buffer of the compute dtype, or returned as a new tensor the engine may overwrite), with
    ``p_ij = 2^t_ij / sum_k 2^t_ik`` over all ``M`` columns (``-inf`` entries allowed; a row of
    ``-inf`` has no targets) and ``fn`` returning the same ``p``. The single sweep's in-cache
    route then reduces the normaliser in the same sweep (online softmax: no pre-pass over the
    teacher) and calls ``logits`` once per chunk into a reused buffer; ``mass`` is exactly 1
    (0 for a row without targets). The other paths call ``fn``.
    """

    fn: Callable[[int, int, int, int], Tensor]
    transposed: Optional[Callable[[int, int, int, int], Tensor]] = None
    logits: Optional[Callable[[int, int, int, int, Tensor], Tensor]] = None


#: how the engine merges a statistic's partial values across tiles (``MOMENT``: a mean under
#: term 0's softmax, merged with the weights ``exp(lse_0 partial - lse_0 merged)``)
LOGADDEXP, ADD, MOMENT = "logaddexp", "add", "moment"


def _stat(merge: Optional[str], differentiable: bool = True):
    """A statistic field, absent (``None``) unless the spec asks for it. ``merge``: how the
    torch paths merge its partial values across tiles (``None``: not swept by them)."""
    return field(default=None, metadata={"merge": merge, "differentiable": differentiable})


@dataclass(frozen=True)
class RowStatistics:
    """Row statistics of a block of ``b`` anchor rows: what ``RowSpec.row_fn`` receives.

    A field the spec does not ask for is ``None``.

    Attributes
    ----------
    lse:
        ``(K, b)``: row ``k`` is ``lse_k`` of ``RowSpec.terms[k]`` (``None`` without terms).
    ce:
        ``(b,)``: ``lse_0 - u_i,positive(i)`` (``RowSpec.positive``).
    phi:
        ``(b,)``: ``sum_j softplus(u_ij + bias)`` (``RowSpec.softplus_bias``).
    tgt, mass:
        ``(b,)``: ``sum_j p_ij u_ij`` and ``sum_j p_ij`` (``RowSpec.soft_targets``); ``mass``
        carries no gradient.
    mom:
        ``(b,)``: ``sum_j pi_ij u_ij`` with ``pi_i`` the softmax of term 0 (its weights,
        exclusions and ``r`` included; ``RowSpec.moment``); 0 for an empty row.
    diag:
        ``(b,)``: the paired logit ``u_i,i+o`` (only from the GPU backend's
        ``contrast_triton(diagonal=o)``).
    """

    lse: Optional[Tensor] = _stat(LOGADDEXP)
    ce: Optional[Tensor] = _stat(LOGADDEXP)
    phi: Optional[Tensor] = _stat(ADD)
    tgt: Optional[Tensor] = _stat(ADD)
    mass: Optional[Tensor] = _stat(ADD, differentiable=False)
    mom: Optional[Tensor] = _stat(MOMENT)
    diag: Optional[Tensor] = _stat(None)  # Triton kernels only


@dataclass(frozen=True)
class ColumnStatistics:
    """Column statistics of a block of ``t`` candidates: what ``RowSpec.col_fn`` receives.

    A field the spec does not ask for is ``None``.

    Attributes
    ----------
    lse:
        ``(t,)``: ``log sum_i w^0_ij exp(u_ij)``, the column reduction of the first term.
    tgt, mass:
        ``(t,)``: ``sum_i p_ij u_ij`` and ``sum_i p_ij`` (``RowSpec.soft_targets``); ``mass``
        carries no gradient.
    diag:
        ``(t,)``: the paired logit ``u_j-o,j`` (only from the GPU backend's
        ``contrast_triton(diagonal=o)``).
    """

    lse: Optional[Tensor] = _stat(LOGADDEXP)
    tgt: Optional[Tensor] = _stat(ADD)
    mass: Optional[Tensor] = _stat(ADD, differentiable=False)
    diag: Optional[Tensor] = _stat(None)  # Triton kernels only


Statistics = Union[RowStatistics, ColumnStatistics]
#: a statistics record of either kind, kept by functions that return the kind they were given
StatsT = TypeVar("StatsT", RowStatistics, ColumnStatistics)


def present_fields(stats: Statistics) -> list:
    """The :class:`dataclasses.Field` objects of ``stats`` that hold a tensor, in field order."""
    return [f for f in fields(stats) if getattr(stats, f.name) is not None]


def merges_by_logaddexp(f) -> bool:
    """Partial values of the statistic merge with ``logaddexp`` (else by addition, or as a
    moment: :func:`merges_as_moment`)."""
    return f.metadata["merge"] == LOGADDEXP


def merges_as_moment(f) -> bool:
    """Partial values are means under term 0's partial softmax (``mom``): merged weighted by
    ``exp(partial lse_0 - merged lse_0)``."""
    return f.metadata["merge"] == MOMENT


def differentiable(f) -> bool:
    """The statistic carries a gradient (``mass`` does not)."""
    return f.metadata["differentiable"]


def map_statistics(fn: Callable, stats: StatsT, *others: Statistics) -> StatsT:
    """``stats`` with every present field ``f`` replaced by ``fn(f, value, *other values)``
    (``others``: records with the same fields present); absent fields stay ``None``."""
    return replace(
        stats,
        **{
            f.name: fn(f, getattr(stats, f.name), *(getattr(o, f.name) for o in others))
            for f in present_fields(stats)
        },
    )


RowFn = Callable[[RowStatistics, dict], Tensor]
ColumnFn = Callable[[ColumnStatistics, dict], Tensor]


@dataclass(frozen=True)
class RowSpec:
    """A row-wise objective for the engine (immutable: derive variants with
    :func:`dataclasses.replace`).

    ``row_fn(stats, side) -> (b,)`` per-row contributions to the loss (already weighted for the
    reduction, so that the loss is their sum), given the :class:`RowStatistics` of a block of
    rows (``stats.lse``: ``(K, b)``, plus ``phi``, ``tgt``, ``mass`` when present) and the
    block's slice of every side tensor. ``col_fn`` likewise for the :class:`ColumnStatistics`
    (``lse``, ``tgt``, ``mass``) and column side tensors; it makes the objective two-sided, which
    the engine computes with the recompute path.

    ``positive`` (optional) is an ``(N,)`` integer tensor of global candidate columns, one per
    row, that term 0 (``r = 1``) must not exclude; it adds the row statistic ``ce``
    ``= lse_0,i - u_i,positive(i)``, with the positive logit read from the very tile values that
    enter the log-sum-exp, so that the two cancel exactly (``lse`` is not rounded to the size of
    the logits first). Paths that cannot read it from the tile (Triton kernels, the ring
    strategy) use :func:`without_positive`: a separate dot product, as exact as ``lse``.

    ``moment`` adds the row statistic ``mom`` ``= sum_j pi_ij u_ij``, the first moment of the
    logits under term 0's softmax ``pi_ij = w_ij exp(r u_ij - lse_0,i)``, swept beside the
    log-sum-exp with its exact gradient ``d mom_i / d u_ij = pi_ij (1 + r (u_ij - mom_i))``
    (CACR's softmax-weighted repulsion needs it; one sweep instead of a second weighted
    log-sum-exp).

    ``row_group`` (default 1): ``row_fn`` may couple each group of ``row_group`` consecutive
    rows (N must be a multiple): the single sweep's row blocks then hold whole groups, and
    ``row_fn`` may return one value per group instead of one per row (MV-InfoNCE: a sample's V
    views, stored sample-major, combined by a log-sum-exp). With ``reduce=False`` the engine
    returns ``row_fn``'s output as it is.
    """

    terms: Sequence[LSETerm] = (LSETerm(),)
    row_fn: Optional[RowFn] = None
    row_side: dict = field(default_factory=dict)
    columns: bool = False
    col_fn: Optional[ColumnFn] = None
    col_side: dict = field(default_factory=dict)
    softplus_bias: Optional[Tensor] = None  # enables phi_i = sum_j softplus(u_ij + bias)
    soft_targets: Optional[SoftTargets] = None
    positive: Optional[Tensor] = None  # adds ce = lse_0 - u_i,positive(i), read in the tile
    moment: bool = False  # adds mom = sum_j softmax(term 0)_ij u_ij
    row_group: int = 1  # row_fn may couple each group of row_group consecutive rows

    @property
    def plain(self) -> bool:
        """One plain LSE (r = 1) with O(1) exclusions per row and no other statistic: tiles can
        be masked and exponentiated in place (columns allowed)."""
        return (
            len(self.terms) == 1
            and self.terms[0].r == 1.0
            and self.terms[0].exclude.is_sparse
            and self.terms[0].weights is None
            and self.softplus_bias is None
            and self.soft_targets is None
            and not self.moment
        )


#: side-tensor name under which :func:`without_positive` passes the positive logits
POSITIVE_SIDE = "_positive_logit"


def check_positive_index(spec: RowSpec, N: int, M: int) -> None:
    """``spec.positive``: an (N,) integer tensor of columns in [0, M); term 0 has ``r = 1``.
    ``spec.moment`` needs a term 0."""
    if spec.moment and not spec.terms:
        raise ValueError("RowSpec.moment needs a first LSE term (its softmax weighs the moment)")
    g = spec.row_group
    if not isinstance(g, int) or g < 1 or N % g:
        raise ValueError(f"RowSpec.row_group must be an int >= 1 dividing N={N}, got {g!r}")
    p = spec.positive
    if p is None:
        return
    if p.dim() != 1 or p.shape[0] != N or p.is_floating_point():
        raise ValueError(
            f"RowSpec.positive must be an ({N},) integer tensor, got {p.dtype} {tuple(p.shape)}"
        )
    if N and not p.is_cuda and (int(p.min()) < 0 or int(p.max()) >= M):  # no device sync
        raise ValueError(f"RowSpec.positive must hold columns in [0, {M})")
    if not spec.terms or spec.terms[0].r != 1.0:
        raise ValueError("RowSpec.positive needs a first LSE term with r = 1")


def without_positive(spec: RowSpec, A: Tensor, B: Tensor, kappa: Tensor) -> RowSpec:
    """The same objective for paths that do not read the positive from the logit tile.

    ``ce`` becomes ``lse_0 - kappa_i <a_i, b_positive(i)>`` with the positive logit from a
    separate (differentiable) dot product passed as a side tensor: correct, but only as exact
    as ``lse`` itself. ``A``/``B``: the anchors and the candidates ``positive`` indexes (the
    indexed rows are converted to ``A``'s dtype, so fp16/bf16 candidates may be passed as
    they are with ``A`` in fp32).
    """
    if spec.positive is None:
        return spec
    kr = kappa if kappa.dim() == 0 else kappa[:, None]
    pos = ((A * kr) * B[spec.positive].to(A.dtype)).sum(-1)  # only the N positives converted
    row_fn = spec.row_fn

    def fn(stats: RowStatistics, side: dict) -> Tensor:
        side = dict(side)
        assert stats.lse is not None and row_fn is not None
        return row_fn(replace(stats, ce=stats.lse[0] - side.pop(POSITIVE_SIDE)), side)

    return replace(spec, positive=None, row_fn=fn, row_side={**spec.row_side, POSITIVE_SIDE: pos})
