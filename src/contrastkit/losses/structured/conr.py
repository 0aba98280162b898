"""ConR: contrastive regulariser for deep imbalanced regression (Keramati, Meng, Evans, "ConR:
Contrastive Regularizer for Deep Imbalanced Regression", ICLR 2024, arXiv 2309.06651;
BorealisAI/ConR ``agedb-dir/loss.py``).

Features ``(B, d)`` (two augmented views concatenated), continuous targets ``y``, detached
predictions ``yhat`` and per-sample weights ``omega`` (LDS; ones by default). With
``u_ij = <q_i, q_j> / tau`` on normalised features::

    P(i) = {j != i : |y_i - y_j| <= w}                     (positives: label window)
    N(i) = {j : |y_i - y_j| > w and |yhat_i - yhat_j| <= w}  (confused negatives)
    eta_ij = omega_i exp(e |y_i - y_j|)     (push="exp", AgeDB/IMDB; "linear": omega_i e |dy|)
    D_i = sum_{P(i)} exp(u_ij) + sum_{N(i)} eta_ij exp(u_ij) [+ (B - |P(i)|)]
    l_i = (1/|P(i)|) sum_{j in P(i)} [log D_i - u_ij],   l_i = 0 when N(i) is empty
    L = 1/B sum_i omega_i l_i

``denominator="reference"`` (default) adds the official code's constant ``B - |P(i)|`` (it
exponentiates the positive-masked logit matrix, so every non-positive entry adds exp(0) = 1);
``"paper"`` omits it. Anchors without positives give NaN in the official code; here they
contribute 0 and leave the mean's count. The official AgeDB function hard-codes tau = 0.07
(its argument default 0.2 is ignored); the default here is 0.07.

Engine: one weighted log-sum-exp per row (weights 1 on P(i), eta_ij on N(i), 0 elsewhere, from
O(B) labels and predictions per tile) and soft targets ``1/|P(i)|`` on P(i).

Exactness: rank-local. The label windows, the confused negatives and ``|P(i)|`` are computed
over this rank's batch (the official code is single-process).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..._validation import check_embeddings, check_positive
from ...engine import LSETerm, RowSpec, SoftTargets
from ...objective import (
    Objective,
    engine_args,
    kappa,
    prepare,
    rank_local_objective,
    row_weight,
    run,
)

__all__ = ["conr", "ConR"]

_COUNT_ROWS = 1024


def _vector(name: str, x, n: int, ref: Tensor) -> Tensor:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if x.dim() == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() != 1 or x.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) or ({n}, 1), got {tuple(x.shape)}")
    if not bool(torch.isfinite(x.double()).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    return x.detach().to(device=ref.device, dtype=ref.dtype)


@rank_local_objective
def conr(
    features: Tensor,
    targets: Tensor,
    preds: Tensor,
    weights: Optional[Tensor] = None,
    *,
    window: float = 1.0,
    temperature=0.07,
    e: float = 0.01,
    push: str = "exp",
    denominator: str = "reference",
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """ConR of ``features``, ``targets``, ``preds`` (and LDS ``weights``); see :class:`ConR`."""
    eng = engine_args(chunk_size, backend)
    check_embeddings("features", features, min_rows=2)
    check_positive("window", window)
    if isinstance(e, bool) or not isinstance(e, (int, float)) or e < 0:
        raise ValueError(f"e must be a number >= 0, got {e!r}")
    if push not in ("exp", "linear"):
        raise ValueError(f"push must be 'exp' or 'linear', got {push!r}")
    if denominator not in ("reference", "paper"):
        raise ValueError(f"denominator must be 'reference' or 'paper', got {denominator!r}")
    B = features.shape[0]
    Z = prepare(features, normalize)
    y = _vector("targets", targets, B, Z)
    yh = _vector("preds", preds, B, Z)
    omega = torch.ones_like(y) if weights is None else _vector("weights", weights, B, Z)
    if bool((omega < 0).any()):
        raise ValueError("weights must be >= 0")
    k = kappa(Z, temperature, n_rows=B, group=None)

    n_pos = torch.empty(B, dtype=torch.long, device=Z.device)
    neg_count = torch.empty_like(n_pos)
    for r0 in range(0, B, _COUNT_ROWS):  # counts by row blocks: O(b B) memory
        r1 = min(B, r0 + _COUNT_ROWS)
        near = (y[r0:r1, None] - y[None, :]).abs() <= window
        n_pos[r0:r1] = near.sum(1) - 1
        neg_count[r0:r1] = ((~near) & ((yh[r0:r1, None] - yh[None, :]).abs() <= window)).sum(1)
    has_pos, has_neg = n_pos > 0, neg_count > 0

    def masks(r0, r1, c0, c1):
        d = (y[r0:r1, None] - y[None, c0:c1]).abs()
        pos = d <= window
        rows = torch.arange(r0, r1, device=d.device)[:, None]
        cols = torch.arange(c0, c1, device=d.device)[None, :]
        pos &= rows != cols
        neg = (d > window) & ((yh[r0:r1, None] - yh[None, c0:c1]).abs() <= window)
        return d, pos, neg

    def den_weights(r0, r1, c0, c1):
        d, pos, neg = masks(r0, r1, c0, c1)
        eta = torch.exp(e * d) if push == "exp" else e * d
        return torch.where(pos, 1.0, torch.where(neg, omega[r0:r1, None] * eta, 0.0))

    def targets_fn(r0, r1, c0, c1):
        _, pos, _ = masks(r0, r1, c0, c1)
        return pos.to(Z.dtype) / n_pos[r0:r1, None].clamp(min=1).to(Z.dtype)

    count = int(has_pos.sum()) if reduction == "mean" else 1
    w = row_weight(reduction, max(count, 1), group=None) * omega * (has_pos & has_neg).to(Z.dtype)
    log_c = torch.log((B - n_pos).to(Z.dtype)) if denominator == "reference" else None

    def row_fn(st, sd):
        lse = st.lse[0]
        ok = sd["w"] != 0
        lse = torch.where(ok, lse, torch.zeros_like(lse))
        if "log_c" in sd:
            lse = torch.logaddexp(lse, sd["log_c"])
        return torch.where(ok, sd["w"] * (lse - st.tgt), torch.zeros_like(lse))

    side = {"w": w}
    if log_c is not None:
        side["log_c"] = log_c
    spec = RowSpec(
        terms=(LSETerm(weights=den_weights),),
        soft_targets=SoftTargets(targets_fn),
        row_fn=row_fn,
        row_side=side,
    )
    return run(Z, Z, spec, k, reduction, eng, group=None)


class ConR(Objective, functional=conr):
    """ConR: a contrastive regulariser for deep imbalanced regression.

    Samples whose continuous targets are within a window ``w`` are positives of each other;
    samples whose targets are far apart but whose *predictions* are close (the model confuses
    them) are negatives, pushed with a weight that grows with their label distance. Anchors
    without positives, or without confused negatives, contribute 0. Added to the regression
    loss (``L_reg + beta * ConR``, beta = 4 on AgeDB). Rank-local under a process group.

    ::

        u_ij = <q_i, q_j> / T   (normalised features)
        P(i) = {j != i : |y_i - y_j| <= w},  N(i) = {j : |y_i - y_j| > w, |yh_i - yh_j| <= w}
        eta_ij = omega_i exp(e |y_i - y_j|)        (push="exp"; "linear": omega_i e |y_i - y_j|)
        D_i = sum_{P(i)} exp(u_ij) + sum_{N(i)} eta_ij exp(u_ij) [+ (B - |P(i)|), "reference"]
        l_i = omega_i / |P(i)| sum_{j in P(i)} [log D_i - u_ij]     (0 when N(i) is empty)
        loss = sum_i l_i / #{i : |P(i)| > 0}

    Args:
        window (float, default 1.0): label / prediction window ``w`` (AgeDB 1, NYUD2 0.2).
        temperature (float or tensor, default 0.07): ``T`` (the official function's hard-coded
            value).
        e (float, default 0.01): pushing coefficient (AgeDB 0.01, NYUD2 0.2).
        push (str, default "exp"): ``"exp"`` or ``"linear"`` (NYUD2) pushing weight.
        denominator (str, default "reference"): ``"reference"`` adds the official code's
            constant ``B - |P(i)|``; ``"paper"`` omits it.
        reduction (str, default "mean"): ``"mean"`` (over anchors with positives) | ``"sum"`` |
            ``"none"`` (per anchor).
        normalize (bool, default True): L2-normalise the features.
        chunk_size (int or None, default None), backend (str, default "auto"): engine options.

    Inputs:
        - ``features``: ``(B, d)`` float (two augmented views concatenated).
        - ``targets``: ``(B,)`` real regression targets ``y`` (positives: within ``w``).
        - ``preds``: ``(B,)`` real predictions ``yh`` (detached).
        - ``weights`` (optional): ``(B,)`` non-negative per-sample weights ``omega`` (LDS).

    Example::

        import torch
        import contrastkit as ck

        f = torch.randn(16, 8)
        y = torch.rand(16) * 10
        yh = y + torch.randn(16)
        loss = ck.ConR(window=1.0, temperature=0.07)(f, y, yh)

    See also:
        :class:`SupReMix` (contrastive regression with mixtures), :class:`SupCon`.

    References:
        Keramati, Meng, Evans, "ConR: Contrastive Regularizer for Deep Imbalanced Regression",
        ICLR 2024, arXiv:2309.06651 (BorealisAI/ConR).
    """
