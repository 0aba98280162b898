"""Debiased contrastive loss (Chuang et al., NeurIPS 2020) and HCL (Robinson et al., ICLR 2021).

Over the 2N stacked views with ``Nn = 2N - 2`` negatives per anchor and ``u = s / t``::

    neg_i = sum_{j neg} exp(u_ij)                                 (debiased)
    neg_i = Nn exp(LSE_j((1 + beta) u_ij) - LSE_j(beta u_ij))     (HCL, importance weights
                                                                   exp(beta u), not detached)
    Ng_i  = max((neg_i - tau_plus Nn exp(u_pos)) / (1 - tau_plus),  Nn exp(-1/t))
    l_i   = -u_pos + log(exp(u_pos) + Ng_i),   mean over 2N

as chingyaoc/DCL and joshr17/HCL ``main.py``. Evaluated in log space (shifted by the row's
largest term) so a small temperature cannot overflow. The clamp assumes cosine similarities
(``normalize=True``), as the official code does. ``tau_plus = 0`` and ``beta = 0`` give NT-Xent.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .._validation import check_range
from ..engine import LSETerm, PairMask, RowSpec
from ._common import (
    FunctionalLoss,
    engine_args,
    exact_objective,
    global_rows,
    kappa,
    partner_logits,
    row_weight,
    run,
    two_views,
)

__all__ = ["debiased_info_nce", "hard_negative_info_nce", "DebiasedInfoNCE", "HardNegativeInfoNCE"]


def _debiased_row(log_neg: Tensor, pos: Tensor, k: Tensor, n_neg: int, tau_plus: float):
    c = torch.maximum(log_neg, pos).detach()
    ng = (torch.exp(log_neg - c) - tau_plus * n_neg * torch.exp(pos - c)) / (1.0 - tau_plus)
    floor = n_neg * torch.exp(-k - c)
    ng = torch.maximum(ng, floor)
    return -pos + c + torch.log(torch.exp(pos - c) + ng)


def _estimator(z1, z2, temperature, tau_plus, beta, reduction, normalize, chunk_size, backend):
    eng = engine_args(chunk_size, backend)
    check_range("tau_plus", tau_plus, 0.0, 1.0)
    if beta is not None and (not isinstance(beta, (int, float)) or beta < 0):
        raise ValueError(f"beta must be a number >= 0, got {beta!r}")
    Z, partner = two_views(z1, z2, normalize, min_rows=2)
    k = kappa(Z, temperature)
    if k.dim() != 0:
        raise ValueError("temperature must be a scalar for the debiased estimators")
    n_neg = global_rows(Z.shape[0]) - 2  # over the global batch under a process group
    w = row_weight(reduction, Z.shape[0])
    neg = PairMask(self_offset=0, index=partner)
    if beta is None:
        terms = (LSETerm(exclude=neg),)

        def log_neg(lse):
            return lse[0]
    else:
        terms = (LSETerm(r=1.0 + beta, exclude=neg), LSETerm(r=float(beta), exclude=neg))

        def log_neg(lse):
            return math.log(n_neg) + lse[0] - lse[1]

    spec = RowSpec(
        terms=terms,
        row_fn=lambda st, sd: (
            w * _debiased_row(log_neg(st["lse"]), sd["pos"], sd["kappa"], n_neg, tau_plus)
        ),
        # kappa as a side input so a learnable temperature also gets the clamp's gradient
        row_side={"pos": partner_logits(Z, k), "kappa": k.expand(Z.shape[0])},
    )
    return run(Z, Z, spec, k, reduction, eng)


@exact_objective
def debiased_info_nce(
    z1: Tensor,
    z2: Tensor,
    *,
    temperature=0.5,
    tau_plus: float = 0.1,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """Debiased contrastive loss of two views (N, d), N >= 2; see :class:`DebiasedInfoNCE`."""
    return _estimator(
        z1, z2, temperature, tau_plus, None, reduction, normalize, chunk_size, backend
    )


@exact_objective
def hard_negative_info_nce(
    z1: Tensor,
    z2: Tensor,
    *,
    temperature=0.5,
    beta: float = 1.0,
    tau_plus: float = 0.1,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """HCL of two views (N, d), N >= 2; see :class:`HardNegativeInfoNCE`."""
    return _estimator(
        z1, z2, temperature, tau_plus, beta, reduction, normalize, chunk_size, backend
    )


class DebiasedInfoNCE(FunctionalLoss):
    """Debiased contrastive loss: ``forward(z1, z2)``; t = 0.5, tau_plus = 0.1 (official)."""

    def __init__(
        self,
        temperature: float = 0.5,
        tau_plus: float = 0.1,
        reduction: str = "mean",
        normalize: bool = True,
        chunk_size: Optional[int] = None,
        backend: str = "auto",
    ):
        check_range("tau_plus", tau_plus, 0.0, 1.0)
        super().__init__(
            debiased_info_nce,
            temperature=temperature,
            tau_plus=tau_plus,
            reduction=reduction,
            normalize=normalize,
            chunk_size=chunk_size,
            backend=backend,
        )


class HardNegativeInfoNCE(FunctionalLoss):
    """HCL: ``forward(z1, z2)``; t = 0.5, beta = 1, tau_plus = 0.1 (joshr17/HCL launch.sh)."""

    def __init__(
        self,
        temperature: float = 0.5,
        beta: float = 1.0,
        tau_plus: float = 0.1,
        reduction: str = "mean",
        normalize: bool = True,
        chunk_size: Optional[int] = None,
        backend: str = "auto",
    ):
        check_range("tau_plus", tau_plus, 0.0, 1.0)
        if not isinstance(beta, (int, float)) or beta < 0:
            raise ValueError(f"beta must be a number >= 0, got {beta!r}")
        super().__init__(
            hard_negative_info_nce,
            temperature=temperature,
            beta=beta,
            tau_plus=tau_plus,
            reduction=reduction,
            normalize=normalize,
            chunk_size=chunk_size,
            backend=backend,
        )
