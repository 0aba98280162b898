"""NPO: negative preference optimisation for unlearning, on sequence log-probabilities of the
forget responses under a policy and a frozen reference (exact under a process group: a
per-sequence mean; not engine-backed: one scalar per sequence, O(N))."""

from __future__ import annotations

from typing import Union

import torch.nn.functional as F
from torch import Tensor

from ..._validation import check_reduction
from ...objective import Objective, exact_objective, objective_group, reduce
from ._common import check_log_probs, coefficient, compute_type, policy, reference

__all__ = ["npo", "NPO"]


@exact_objective
def npo(
    policy_forget: Tensor,
    reference_forget: Tensor,
    *,
    beta: Union[float, Tensor] = 0.1,
    reduction: str = "mean",
) -> Tensor:
    """Negative preference optimisation on forget responses; see :class:`NPO`."""
    group = objective_group()
    check_reduction(reduction)
    check_log_probs({"policy_forget": policy_forget, "reference_forget": reference_forget}, 1)
    dt = compute_type(policy_forget, reference_forget)
    rho = policy(policy_forget, dt) - reference(reference_forget, dt)
    b = coefficient("beta", beta, rho, group=group)
    rows = -F.logsigmoid(-b * rho) * (2 / b)
    return reduce(rows, reduction, group=group)


class NPO(Objective, functional=npo):
    """NPO: negative preference optimisation (unlearning with forget responses only).

    Unlearning by gradient ascent on the forget set's negative log-likelihood diverges
    quickly (the loss is unbounded) and destroys the model. NPO is DPO with only a rejected
    response: it lowers the forget responses' likelihood relative to the reference model (the
    model before unlearning) through a bounded, saturating loss, so the push stops once a
    response is unlikely enough. With ``rho(y) = log pi(y|x) - log pi_ref(y|x)`` (sequence
    log-probabilities: sums over the response tokens)::

        l    = -(2 / beta) log sigmoid(-beta rho(y))  =  (2 / beta) log(1 + (pi / pi_ref)^beta)
        loss = mean over forget sequences of l

    At ``pi = pi_ref`` each sequence costs ``(2 / beta) log 2`` and the gradient in ``rho`` is
    1, that of gradient ascent; as ``beta -> 0`` the loss minus ``(2 / beta) log 2`` tends to
    ``mean rho`` (gradient ascent). NPO+RT adds a retain-set NLL (``gamma * NLL``) outside
    this objective. The official TOFU trainer computes each forget sequence's log-ratio from
    per-sequence sums of token log-probabilities, as here (some reimplementations use the
    batch's token-mean NLL instead). The reference is detached (precomputed, or a frozen copy
    under ``torch.no_grad()``; :func:`~contrastkit.losses.preference.sequence_log_probs`).
    Not engine-backed: one scalar per sequence, O(N). Exact under a ``torch.distributed``
    process group (the mean over the global batch).

    Args:
        beta (float or Tensor): inverse temperature of the log-ratio, > 0. Default 0.1 (the
            official scripts' value).
        reduction (str): ``"mean"`` over forget sequences (default), ``"sum"`` or ``"none"``
            (``(N,)``).

    Inputs:
        ====================  ========  ===================================================
        input                 shape     meaning
        ====================  ========  ===================================================
        ``policy_forget``     ``(N,)``  ``log pi(y | x)`` of the forget responses
        ``reference_forget``  ``(N,)``  ``log pi_ref(y | x)`` of the same responses
                                        (detached)
        ====================  ========  ===================================================

    Example::

        import torch
        from contrastkit.losses.preference import NPO

        policy_forget = torch.tensor([-20.0, -35.5, -12.1], requires_grad=True)
        reference_forget = torch.tensor([-19.0, -36.0, -12.0])
        loss = NPO(beta=0.1)(policy_forget, reference_forget)
        loss.backward()

    See also:
        :class:`DPO` (a chosen response as well), :class:`D2O` (model samples as the
        positive side).

    References:
        Zhang, Lin, Bai, Mei, "Negative Preference Optimization: From Catastrophic Collapse to
        Effective Unlearning", arXiv:2404.05868.
    """
