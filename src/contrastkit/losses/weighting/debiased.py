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

from ..._validation import check_range
from ...engine import LSETerm, PairMask, RowSpec
from ...objective import (
    Objective,
    engine_args,
    exact_objective,
    global_rows,
    kappa,
    objective_group,
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


def _check_options(tau_plus, beta) -> None:
    check_range("tau_plus", tau_plus, 0.0, 1.0)
    if beta is not None and (not isinstance(beta, (int, float)) or beta < 0):
        raise ValueError(f"beta must be a number >= 0, got {beta!r}")


def _estimator(z1, z2, temperature, tau_plus, beta, reduction, normalize, chunk_size, backend):
    group = objective_group()
    eng = engine_args(chunk_size, backend)
    _check_options(tau_plus, beta)
    Z, partner = two_views(z1, z2, normalize, min_rows=2)
    k = kappa(Z, temperature, group=group)
    if k.dim() != 0:
        raise ValueError("temperature must be a scalar for the debiased estimators")
    n_neg = global_rows(Z.shape[0], group=group) - 2  # over the global batch under a process group
    w = row_weight(reduction, Z.shape[0], group=group)
    neg = PairMask(self_offset=0, index=partner)
    terms: tuple[LSETerm, ...]
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
            w * _debiased_row(log_neg(st.lse), sd["pos"], sd["kappa"], n_neg, tau_plus)
        ),
        # kappa as a side input so a learnable temperature also gets the clamp's gradient
        row_side={"pos": partner_logits(Z, k), "kappa": k.expand(Z.shape[0])},
    )
    return run(Z, Z, spec, k, reduction, eng, group=group)


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
    """Debiased contrastive loss of two views (N, d); see :class:`DebiasedInfoNCE`."""
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


class DebiasedInfoNCE(Objective, functional=debiased_info_nce):
    """Debiased contrastive loss: NT-Xent whose negative sum is corrected for the chance
    ``tau_plus`` that an in-batch "negative" shares the anchor's class (Chuang et al.).

    Both views are stacked into 2N anchors; each anchor's positive is its other view and its
    ``Nn = 2N - 2`` negatives are the other rows. With ``u = cos / temperature``::

        neg_i = sum_{j neg} exp(u_ij)
        Ng_i  = max((neg_i - tau_plus Nn exp(u_pos)) / (1 - tau_plus),  Nn exp(-1/temperature))
        l_i   = -u_pos + log(exp(u_pos) + Ng_i),   loss = mean over the 2N anchors

    ``tau_plus = 0`` is NT-Xent. Exact under a process group (``Nn`` counts the global batch).

    Args:
        temperature (float or Tensor, default 0.5): tau (a 0-dim tensor may be learnable).
        tau_plus (float, default 0.1): the class prior of a positive among the negatives, in
            [0, 1) (the official name; not a temperature).
        reduction (str, default "mean"): "mean" | "sum" | "none" (2N per-anchor terms).
        normalize (bool, default True): L2-normalise (the clamp assumes cosines).
        chunk_size (int or None, default None), backend (str, default "auto"): engine options.

    Inputs:
        - ``z1``, ``z2`` (N, d) float, N >= 2: two views; row ``i`` of each is a positive pair.

    Example::

        import torch
        import contrastkit as ck

        z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
        loss = ck.DebiasedInfoNCE(temperature=0.5, tau_plus=0.1)(z1, z2)

    See also:
        :class:`HardNegativeInfoNCE`, :class:`NTXent`, :class:`DCL`.

    References:
        Chuang et al., "Debiased Contrastive Learning", NeurIPS 2020, arXiv:2007.00224
        (github.com/chingyaoc/DCL).
    """


class HardNegativeInfoNCE(Objective, functional=hard_negative_info_nce):
    """HCL: the debiased loss with negatives importance-weighted by ``exp(beta u)``, so that
    harder (more similar) negatives count more (Robinson et al.).

    Same views and negatives as :class:`DebiasedInfoNCE`; the negative sum becomes::

        neg_i = Nn exp(LSE_j((1 + beta) u_ij) - LSE_j(beta u_ij))     (weights not detached)
        Ng_i  = max((neg_i - tau_plus Nn exp(u_pos)) / (1 - tau_plus),  Nn exp(-1/temperature))
        l_i   = -u_pos + log(exp(u_pos) + Ng_i),   loss = mean over the 2N anchors

    ``beta = 0`` is the debiased loss; ``beta = 0, tau_plus = 0`` NT-Xent. Exact under a
    process group.

    Args:
        temperature (float or Tensor, default 0.5): tau.
        beta (float, default 1.0): concentration on hard negatives, >= 0.
        tau_plus (float, default 0.1): class prior, in [0, 1) (not a temperature).
        reduction (str, default "mean"): "mean" | "sum" | "none" (2N per-anchor terms).
        normalize (bool, default True): L2-normalise.
        chunk_size (int or None, default None), backend (str, default "auto"): engine options.

    Inputs:
        - ``z1``, ``z2`` (N, d) float, N >= 2: two views; row ``i`` of each is a positive pair.

    Example::

        import torch
        import contrastkit as ck

        z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
        loss = ck.HardNegativeInfoNCE(temperature=0.5, beta=1.0)(z1, z2)

    See also:
        :class:`DebiasedInfoNCE`, :class:`NTXent`.

    References:
        Robinson et al., "Contrastive Learning with Hard Negative Samples", ICLR 2021,
        arXiv:2010.04592 (github.com/joshr17/HCL).
    """
