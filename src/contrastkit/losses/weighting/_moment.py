"""First moments of a row softmax on the engine, without an engine change.

For unit vectors ``s_ij + 1 >= 0``, so a second log-sum-exp term with per-tile weights
``w_ij = s_ij + 1`` gives the first moment of the row softmax ``pi_ij`` over the same pairs::

    lse0_i = log sum_j exp(u_ij),   lse1_i = log sum_j (s_ij + 1) exp(u_ij),   u = kappa s
    E_i    = sum_j pi_ij s_ij = exp(lse1_i - lse0_i) - 1

The engine treats weights as constants, so ``d lse1 / d s`` misses ``exp(u_ij) / R1_i``; that
is ``(R0 / (kappa R1)) d lse0 / d s``, and :func:`first_moment` adds it back with a detached
factor, so the returned ``E`` has the exact gradient ``pi_ij (1 + kappa (s_ij - E_i))``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ...engine import LSETerm, PairMask


class CosinePlusOne:
    """Per-tile weights ``<a_i, b_j> + 1`` (clamped at 0) of unit vectors, no gradient.

    Remembers the last tile: the single-sweep path asks for the same tile's weights twice
    (statistics, then gradient)."""

    def __init__(self, A: Tensor, B: Tensor):
        self.A, self.B = A.detach(), B.detach()
        self._key: Optional[tuple] = None
        self._val: Optional[Tensor] = None

    def __call__(self, r0: int, r1: int, c0: int, c1: int) -> Tensor:
        key = (r0, r1, c0, c1)
        if key != self._key:
            self._val = (self.A[r0:r1] @ self.B[c0:c1].t()).add_(1.0).clamp_(min=0.0)
            self._key = key
        assert self._val is not None  # set on the first call (_key starts as None)
        return self._val


def moment_terms(exclude: PairMask, A: Tensor, B: Tensor) -> tuple[LSETerm, LSETerm]:
    """The two reductions (plain, cosine-plus-one weighted) over the same pairs."""
    return (LSETerm(exclude=exclude), LSETerm(exclude=exclude, weights=CosinePlusOne(A, B)))


def first_moment(lse0: Tensor, lse1: Tensor, kappa, grad: bool = True) -> Tensor:
    """``E_i = sum_j pi_ij s_ij`` from the two reductions; ``kappa`` the logit multiplier
    (float or per-row tensor, treated as a constant). ``grad=False``: a detached value."""
    if not grad:
        return torch.exp(lse1.detach() - lse0.detach()) - 1.0
    q = (torch.exp(lse0 - lse1) / kappa).detach()
    lse1_full = lse1 + q * (lse0 - lse0.detach())
    return torch.exp(lse1_full - lse0) - 1.0
