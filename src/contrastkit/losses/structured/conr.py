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
O(B) labels and predictions per tile) and soft targets ``1/|P(i)|`` on P(i); both from one
evaluation of the tile's label masks (in-place passes), once per tile.

Exactness: exact under a process group (the official code is single-process): targets and
predictions are gathered, so the label windows, the confused negatives, ``|P(i)|`` (the sweep's
soft-target mass) and the count of anchors with positives are those of the global batch.
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
    exact_objective,
    gather_rows,
    global_rows,
    kappa,
    objective_group,
    prepare,
    row_offset,
    row_weight,
    run,
)

__all__ = ["conr", "ConR"]


def _has_near(y: Tensor, window: float) -> Tensor:
    """``exists j != i: |y_i - y_j| <= window`` per row, exactly as the tile computes it.

    ``fl(y_j - y_i)`` is monotone in ``y_j`` (rounding is monotone), so the closest other value
    in sorted order decides: O(B log B)."""
    B = y.shape[0]
    ys, order = torch.sort(y)
    gap = ys[1:] - ys[:-1]  # fl(y_next - y): exactly |y_i - y_j| of the neighbours
    near = gap <= window
    out_sorted = torch.zeros(B, dtype=torch.bool, device=y.device)
    out_sorted[:-1] |= near
    out_sorted[1:] |= near
    out = torch.empty_like(out_sorted)
    out[order] = out_sorted
    return out


def _window(vs: Tensor, v: Tensor, window: float) -> tuple[Tensor, Tensor]:
    """``[lo_i, hi_i)``: the positions ``j`` of sorted ``vs`` with ``|v_i - vs_j| <= window``
    (contiguous: ``fl(vs_j - v_i)`` is monotone in ``vs_j``), exact to the rounding of the
    subtraction: approximate bounds, then moved over whole runs of equal values until the
    predicate holds inside and fails outside."""
    n = vs.shape[0]
    lo = torch.searchsorted(vs, v - window, right=False)
    hi = torch.searchsorted(vs, v + window, right=True)
    for _ in range(64):
        changed = False
        # lo: the first position inside; step left while the value before is inside
        prev = (lo - 1).clamp(min=0)
        grow = (lo > 0) & ((v - vs[prev]).abs() <= window)
        shrink = (lo < n) & ((v - vs[lo.clamp(max=n - 1)]).abs() > window)
        if bool(grow.any()):
            lo = torch.where(grow, torch.searchsorted(vs, vs[prev], right=False), lo)
            changed = True
        if bool(shrink.any()):
            lo = torch.where(
                shrink, torch.searchsorted(vs, vs[lo.clamp(max=n - 1)], right=True), lo
            )
            changed = True
        last = (hi - 1).clamp(min=0)
        grow = (hi < n) & ((v - vs[hi.clamp(max=n - 1)]).abs() <= window)
        shrink = (hi > 0) & ((v - vs[last]).abs() > window)
        if bool(grow.any()):
            hi = torch.where(grow, torch.searchsorted(vs, vs[hi.clamp(max=n - 1)], right=True), hi)
            changed = True
        if bool(shrink.any()):
            hi = torch.where(shrink, torch.searchsorted(vs, vs[last], right=False), hi)
            changed = True
        if not changed:
            return lo, hi
    raise RuntimeError("ConR: label windows did not settle")  # pragma: no cover


def _range_extreme(x: Tensor, lo: Tensor, hi: Tensor, largest: bool) -> Tensor:
    """``max`` (or ``min``) of ``x[lo_i:hi_i]`` per row (non-empty ranges), by a sparse table."""
    op = torch.maximum if largest else torch.minimum
    table = [x]
    while 2 ** len(table) <= x.shape[0]:
        prev, h = table[-1], 2 ** (len(table) - 1)
        table.append(op(prev[:-h], prev[h:]))
    k = torch.floor(torch.log2((hi - lo).to(torch.float64))).long()
    out = torch.empty_like(x[: lo.shape[0]])
    for level in torch.unique(k).tolist():
        sel = k == level
        t = table[level]
        out[sel] = op(t[lo[sel]], t[hi[sel] - 2**level])
    return out


def _has_confused_negative(y: Tensor, yh: Tensor, window: float) -> Tensor:
    """``exists j: |y_i - y_j| > window and |yh_i - yh_j| <= window`` per row, exactly: the
    ``j`` with close predictions are a window of the prediction-sorted order, and the largest
    ``|y_i - y_j|`` over it is at the window's largest or smallest label."""
    hs, order = torch.sort(yh)
    lo, hi = _window(hs, yh, window)
    ys = y[order]
    top = _range_extreme(ys, lo, hi, largest=True)
    bottom = _range_extreme(ys, lo, hi, largest=False)
    return ((top - y).abs() > window) | ((y - bottom).abs() > window)


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


@exact_objective
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
    group = objective_group()  # None without a process group
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
    k = kappa(Z, temperature, n_rows=B, group=group)
    # every rank's targets and predictions: the candidates' labels (local rows, global columns)
    y_all = gather_rows(y, "targets", group=group)
    yh_all = gather_rows(yh, "preds", group=group)
    offset, B_all = row_offset(B, group=group), global_rows(B, group=group)

    # which anchors have positives / confused negatives: O(B log B) by sorting, no B x B pass
    # (|P(i)| itself comes from the sweep: the soft targets are P's indicator, mass = |P(i)|)
    has_pos = _has_near(y_all, window)[offset : offset + B]
    has_neg = _has_confused_negative(y_all, yh_all, window)[offset : offset + B]
    cache: dict = {}
    big = torch.finfo(Z.dtype).max

    def tile(r0, r1, c0, c1):
        """(weights, soft targets) of a tile, computed once (the engine asks for both)."""
        key = (r0, r1, c0, c1)
        if key not in cache:
            cache.clear()
            # float arithmetic only (boolean masks are several times slower on CPU); the sign
            # of a float difference is exact, so 1[d <= window] = min(sign(window - d) + 1, 1)
            d = torch.sub(y[r0:r1, None], y_all[None, c0:c1]).abs_()
            pos = torch.rsub(d, window).sign_().add_(1).clamp_(max=1)
            close = torch.sub(yh[r0:r1, None], yh_all[None, c0:c1]).abs_()
            close = torch.rsub(close, window).sign_().add_(1).clamp_(max=1)  # |dyh| <= window
            eta = d.mul_(e).exp_() if push == "exp" else d.mul_(e)
            den = eta.mul_(omega[r0:r1, None]).clamp_(max=big)  # no inf * 0 below
            den.mul_(close).mul_(torch.rsub(pos, 1)).add_(pos)
            g0, g1 = max(r0 + offset, c0), min(r1 + offset, c1)
            if g0 < g1:  # no self pair (global row index = global column)
                rows = torch.arange(g0, g1, device=d.device)
                pos[rows - offset - r0, rows - c0] = 0.0
                den[rows - offset - r0, rows - c0] = 0.0
            cache[key] = (den, pos)
        return cache[key]

    def den_weights(r0, r1, c0, c1):
        return tile(r0, r1, c0, c1)[0]

    def targets_fn(r0, r1, c0, c1):
        return tile(r0, r1, c0, c1)[1]

    den_weights.global_columns = True  # type: ignore[attr-defined]

    w = row_weight(reduction, int(has_pos.sum()), group=group)
    w = w * omega * (has_pos & has_neg).to(Z.dtype)
    reference = denominator == "reference"

    def row_fn(st, sd):
        lse = st.lse[0]
        ok = sd["w"] != 0
        lse = torch.where(ok, lse, torch.zeros_like(lse))
        if reference:  # the official code's B - |P(i)| entries exp(0)
            lse = torch.logaddexp(lse, torch.log(B_all - st.mass))
        mean_pos = st.tgt / st.mass.clamp(min=1)  # (1/|P(i)|) sum_{P(i)} u_ij
        return torch.where(ok, sd["w"] * (lse - mean_pos), torch.zeros_like(lse))

    side = {"w": w}
    spec = RowSpec(
        terms=(LSETerm(weights=den_weights),),
        soft_targets=SoftTargets(targets_fn),
        row_fn=row_fn,
        row_side=side,
    )
    return run(Z, Z, spec, k, reduction, eng, group=group)


class ConR(Objective, functional=conr):
    """ConR: a contrastive regulariser for deep imbalanced regression.

    Samples whose continuous targets are within a window ``w`` are positives of each other;
    samples whose targets are far apart but whose *predictions* are close (the model confuses
    them) are negatives, pushed with a weight that grows with their label distance. Anchors
    without positives, or without confused negatives, contribute 0. Added to the regression
    loss (``L_reg + beta * ConR``, beta = 4 on AgeDB). Exact under a process group.

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
