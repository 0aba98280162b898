"""Per-tile math shared by every engine path: statistics of a logit tile and its gradient.

A tile is the block ``u[r0:r1, c0:c1]`` of logits ``u_ij = kappa_i <a_i, b_j>``. ``tile_stats``
returns the tile's contribution to every row (and column) reduction of a :class:`RowSpec`;
partial log-sum-exps are merged across tiles with ``logaddexp``, sums by addition.
``tile_grad`` returns ``d loss / d u`` on the tile given the *final* reductions and the
coefficients ``d loss / d stat``:

    du_ij = sum_k G_k,i r_k w^k_ij exp(r_k u_ij - lse_k,i)   (softmax of each reduction)
          + Gphi_i sigmoid(u_ij + bias)                      (elementwise term)
          + Gtgt_i p_ij + Gcoltgt_j p_ij                     (soft targets)
          + Gcol_j w^0_ij exp(u_ij - col_lse_j)              (column softmax)
          + Gce_i (w^0_ij exp(u_ij - lse_0,i) - [j = pos(i)])  (cross-entropy, ``positive``)
          + Gmom_i pi_ij (1 + r_0 (u_ij - mom_i))            (first moment, ``moment``)

with ``pi_ij = w^0_ij exp(r_0 u_ij - lse_0,i)`` the softmax of term 0.

With ``RowSpec.positive`` the term-0 reduction is taken of ``u_ij - c_i``, ``c_i = u_i,pos(i)``
read from the tile (:func:`positive_logits`): its partial sums are the ``ce`` statistic and
``lse_0 = ce + c`` (the shift is common to every tile of a row, so partials still merge).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .spec import ColumnStatistics, RowSpec, RowStatistics

NEG_INF = float("-inf")


def _masked(u: Tensor, r: float, mask: Optional[Tensor], log_w: Optional[Tensor] = None):
    x = u if r == 1.0 else u * r
    if log_w is not None:
        x = x + log_w
    if mask is not None:
        x = x.masked_fill(mask, NEG_INF)
    return x


def _log_weights(term, r0: int, r1: int, c0: int, c1: int, like: Tensor) -> Optional[Tensor]:
    """log of a term's per-tile weights (log 0 = -inf removes the pair), or None."""
    if term.weights is None:
        return None
    return torch.log(term.weights(r0, r1, c0, c1).to(like.dtype).detach())


def _logsumexp(x: Tensor, dim: int) -> Tensor:
    """``torch.logsumexp`` whose gradient is 0, not NaN, on an empty (all ``-inf``) reduction.

    The value of an empty reduction stays ``-inf`` (objectives test for it); its backward
    would compute ``0 * exp(-inf - (-inf))`` = NaN, so such rows are reduced from zeros instead.
    """
    out = torch.logsumexp(x, dim=dim)
    empty = torch.isneginf(out)
    if not x.requires_grad or not bool(empty.any()):
        return out
    keep = empty.unsqueeze(dim)
    safe = torch.logsumexp(torch.where(keep, torch.zeros_like(x), x), dim=dim)
    return torch.where(empty, out.detach(), safe)


def _finite_or_zero(lse: Tensor) -> Tensor:
    """Empty reductions are -inf; use 0 as the shift so exp(-inf - 0) = 0 instead of NaN."""
    return torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))


def positive_entries(spec: RowSpec, r0: int, r1: int, c0: int, c1: int) -> tuple[Tensor, Tensor]:
    """(rows, cols) inside the tile, relative to its origin, of the rows' positive columns."""
    assert spec.positive is not None  # callers check spec.positive first
    p = spec.positive[r0:r1]
    rows = ((p >= c0) & (p < c1)).nonzero().flatten()
    return rows, p[rows] - c0


def positive_logits(u: Tensor, spec: RowSpec, r0: int, r1: int, c0: int = 0) -> Tensor:
    """``u_i,pos(i)`` (b,) read from a tile that spans every row's positive (before masking)."""
    rows, cols = positive_entries(spec, r0, r1, c0, c0 + u.shape[1])
    if rows.numel() != r1 - r0:
        raise ValueError("the tile does not hold every row's positive column")
    return u[rows, cols]


def tile_stats(
    u: Tensor,
    spec: RowSpec,
    r0: int,
    r1: int,
    c0: int,
    c1: int,
    shift: Optional[Tensor] = None,
) -> tuple[RowStatistics, Optional[ColumnStatistics]]:
    """Row statistics (and column statistics when ``spec.columns``, else ``None``) of one tile.
    Differentiable with plain autograd (dense path).

    With ``spec.positive``, ``shift`` (b,) holds the rows' positive logits ``c`` (read from the
    tile that holds them); ``None`` reads them from this tile, which must then hold them all.
    """
    dev = u.device
    lses = []
    ce = col_lse = phi = tgt = mass = col_tgt = col_mass = mom = None
    if spec.positive is not None and shift is None:
        shift = positive_logits(u, spec, r0, r1, c0)
    for k, term in enumerate(spec.terms):
        log_w = _log_weights(term, r0, r1, c0, c1, u)
        x = _masked(u, term.r, term.exclude.tile(r0, r1, c0, c1, dev), log_w)
        if k == 0 and spec.positive is not None:
            assert shift is not None  # set above when not given
            ce = _logsumexp(x - shift[:, None], dim=1)
            lses.append(ce + shift)
        else:
            lses.append(_logsumexp(x, dim=1))
        if k == 0 and spec.moment:  # 0 for an empty row: exp(-inf - 0) = 0
            pi = torch.exp(x - _finite_or_zero(lses[0])[:, None])
            mom = (pi * u).sum(dim=1)
        if k == 0 and spec.columns:
            col_lse = _logsumexp(x, dim=0)
    if spec.softplus_bias is not None:
        phi = F.softplus(u + spec.softplus_bias).sum(dim=1)
    if spec.soft_targets is not None:
        p = spec.soft_targets.fn(r0, r1, c0, c1).to(u.dtype)
        pu = p * u
        tgt = pu.sum(dim=1)
        mass = p.sum(dim=1)
        if spec.columns:
            col_tgt = pu.sum(dim=0)
            col_mass = p.sum(dim=0)
    rows = RowStatistics(
        lse=torch.stack(lses) if lses else None, ce=ce, phi=phi, tgt=tgt, mass=mass, mom=mom
    )
    if not spec.columns:
        return rows, None
    return rows, ColumnStatistics(lse=col_lse, tgt=col_tgt, mass=col_mass)


def tile_grad(
    u: Tensor,
    spec: RowSpec,
    r0: int,
    r1: int,
    c0: int,
    c1: int,
    row: RowStatistics,
    coef: RowStatistics,
    col: Optional[ColumnStatistics] = None,
    col_coef: Optional[ColumnStatistics] = None,
) -> tuple[Tensor, Optional[Tensor]]:
    """``d loss / d u`` on the tile, and the tile's contribution to ``d loss / d bias``.

    ``row``/``col``: final statistics sliced to the tile's rows/columns; ``coef``/``col_coef``:
    ``d loss / d stat`` in records of the same kind (``coef.lse`` is ``(K, b)``; ``None`` for a
    statistic without a gradient).
    """
    dev = u.device
    du = torch.zeros_like(u)
    for k, term in enumerate(spec.terms):
        assert row.lse is not None and coef.lse is not None  # present: the spec has terms
        mask = term.exclude.tile(r0, r1, c0, c1, dev)
        x = _masked(u, term.r, mask, _log_weights(term, r0, r1, c0, c1, u))
        g = coef.lse[k]
        if k == 0 and coef.ce is not None:
            g = g + coef.ce
        if k == 0 and coef.mom is not None:
            # G_lse r pi + Gmom pi (1 + r (u - mom)) = pi (g r + Gmom (1 - r mom) + Gmom r u)
            assert row.mom is not None  # present with its coefficient
            pi = torch.exp(x - _finite_or_zero(row.lse[0])[:, None])
            f = g * term.r + coef.mom * (1.0 - term.r * row.mom)
            du += pi * (f[:, None] + (coef.mom * term.r)[:, None] * u)
        elif torch.any(g != 0):
            du += (g * term.r)[:, None] * torch.exp(x - _finite_or_zero(row.lse[k])[:, None])
        if k == 0 and col_coef is not None and col_coef.lse is not None:
            assert col is not None and col.lse is not None
            du += col_coef.lse[None, :] * torch.exp(x - _finite_or_zero(col.lse)[None, :])
    if coef.ce is not None:  # - Gce_i at the positive
        rows, cols = positive_entries(spec, r0, r1, c0, c1)
        du[rows, cols] -= coef.ce[rows]
    dbias = None
    if spec.softplus_bias is not None:
        assert coef.phi is not None
        sig = torch.sigmoid(u + spec.softplus_bias) * coef.phi[:, None]
        du += sig
        dbias = sig.sum()
    if spec.soft_targets is not None:
        p = spec.soft_targets.fn(r0, r1, c0, c1).to(u.dtype)
        assert coef.tgt is not None
        du += coef.tgt[:, None] * p
        if col_coef is not None and col_coef.tgt is not None:
            du += col_coef.tgt[None, :] * p
    return du, dbias
