"""S-VCO: symmetrical visual contrastive optimisation, preference terms between image
conditions of a minimal-contrast image pair (exact under a process group: a per-pair mean; not
engine-backed: one scalar per pair, O(N))."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._validation import check_reduction
from ...objective import Objective, exact_objective, objective_group, reduce
from ._common import check_log_probs, compute_type
from ._common import policy as _policy
from ._common import reference as _reference

__all__ = ["svco", "SVCO"]


def _check_betas(betas) -> tuple[float, ...]:
    if isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence) or len(betas) != 4:
        raise ValueError(f"betas must be a sequence of 4 numbers, got {betas!r}")
    out = []
    for b in betas:
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not (0 <= b < float("inf")):
            raise ValueError(f"betas must hold 4 finite numbers >= 0, got {betas!r}")
        out.append(float(b))
    if not any(out):
        raise ValueError(f"betas must have at least one term > 0, got {betas!r}")
    return tuple(out)


@exact_objective
def svco(
    policy: Tensor,
    reference: Tensor,
    *,
    betas: Sequence[float] = (0.1, 0.1, 0.1, 0.1),
    reduction: str = "mean",
) -> Tensor:
    """Symmetrical visual contrastive optimisation; see :class:`SVCO`."""
    group = objective_group()
    check_reduction(reduction)
    bs = _check_betas(betas)
    check_log_probs({"policy": policy, "reference": reference}, 3)
    if tuple(policy.shape[1:]) != (2, 3):
        raise ValueError(
            "policy must have shape (N, 2, 3) (responses y_w, y_l x conditions image_w, "
            f"image_l, no image), got {tuple(policy.shape)}"
        )
    dt = compute_type(policy, reference)
    rho = _policy(policy, dt) - _reference(reference, dt)
    none_w, none_l = rho[:, 0, 2], rho[:, 1, 2]
    margins = (
        rho[:, 0, 0] - none_w,  # y_w: its own image beats no image
        none_w - rho[:, 0, 1],  # y_w: no image beats the contrasting image
        rho[:, 1, 1] - none_l,  # y_l: its own image beats no image
        none_l - rho[:, 1, 0],  # y_l: no image beats the contrasting image
    )
    rows = torch.zeros_like(none_w)
    for b, m in zip(bs, margins):
        if b > 0:
            rows = rows - F.logsigmoid(b * m)
    return reduce(rows, reduction, group=group)


class SVCO(Objective, functional=svco):
    """S-VCO: symmetrical visual contrastive optimisation for vision-language models.

    Training data are minimal-contrast image pairs ``(I_w, I_l)`` (two images that differ in
    one visual detail) with the matching responses ``(y_w, y_l)`` to the same question.
    Instead of contrasting responses, S-VCO contrasts **image conditions** of a fixed response,
    with the text-only condition (no image) as the pivot: each response must become more
    likely with its own image than without an image, and more likely without an image than
    with the contrasting image; both halves of the pair are treated alike (symmetry). With
    ``rho(y | c) = log pi(y | x, c) - log pi_ref(y | x, c)`` (sums over the response tokens)
    and the empty condition ``0``::

        D1 = rho(y_w | I_w) - rho(y_w | 0)      D2 = rho(y_w | 0) - rho(y_w | I_l)
        D3 = rho(y_l | I_l) - rho(y_l | 0)      D4 = rho(y_l | 0) - rho(y_l | I_w)
        l    = sum_k -log sigmoid(beta_k D_k)     (terms with beta_k = 0 dropped)
        loss = mean over pairs of l

    ``D1 + D2 = rho(y_w | I_w) - rho(y_w | I_l)``: image-conditioned DPO telescopes through
    the pivot. At ``pi = pi_ref`` each pair costs ``4 log 2`` (with all four terms). The
    official trainer computes the six policy and six reference log-probabilities in two
    forward passes (with images, without); the reference is the initial model, frozen, and is
    detached here. Not engine-backed: one scalar per pair, O(N). Exact under a
    ``torch.distributed`` process group (the mean over the global batch of pairs).

    Args:
        betas (sequence of 4 floats): ``(beta_1, beta_2, beta_3, beta_4)`` of the terms
            ``D1..D4``, each >= 0 (0 drops the term), at least one > 0. Default all 0.1 (the
            official defaults).
        reduction (str): ``"mean"`` over pairs (default), ``"sum"`` or ``"none"`` (``(N,)``).

    Inputs:
        =============  =============  ====================================================
        input          shape          meaning
        =============  =============  ====================================================
        ``policy``     ``(N, 2, 3)``  ``log pi(y_r | x, c)``: ``r`` indexes the responses
                                      ``(y_w, y_l)``, ``c`` the conditions ``(I_w, I_l,
                                      no image)``
        ``reference``  ``(N, 2, 3)``  the same under the frozen reference (detached)
        =============  =============  ====================================================

    Example::

        import torch
        from contrastkit.losses.preference import SVCO

        policy = (-20 + torch.randn(4, 2, 3)).requires_grad_()
        reference = -20 + torch.randn(4, 2, 3)
        loss = SVCO()(policy, reference)
        loss.backward()

    See also:
        :class:`DPO` (the same logistic term between two responses).

    References:
        Wu et al., "Symmetrical Visual Contrastive Optimization:
        Aligning Vision-Language Models with Minimal Contrastive Images", arXiv:2502.13928.
    """
