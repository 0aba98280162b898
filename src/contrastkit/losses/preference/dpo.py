"""DPO (with conservative DPO's label smoothing) and IPO on sequence log-probabilities of a
policy and a frozen reference (exact under a process group: per-pair means; not
engine-backed: one scalar per pair, O(N))."""

from __future__ import annotations

from typing import Union

import torch.nn.functional as F
from torch import Tensor

from ..._validation import check_reduction
from ...objective import Objective, exact_objective, objective_group, reduce
from ._common import check_fraction, check_log_probs, coefficient, compute_type, policy, reference

__all__ = ["dpo", "DPO", "ipo", "IPO"]


def _log_ratio_margin(policy_chosen, policy_rejected, reference_chosen, reference_rejected):
    """``h = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))`` per pair."""
    check_log_probs(
        {
            "policy_chosen": policy_chosen,
            "policy_rejected": policy_rejected,
            "reference_chosen": reference_chosen,
            "reference_rejected": reference_rejected,
        },
        1,
    )
    dt = compute_type(policy_chosen, policy_rejected, reference_chosen, reference_rejected)
    chosen = policy(policy_chosen, dt) - reference(reference_chosen, dt)
    rejected = policy(policy_rejected, dt) - reference(reference_rejected, dt)
    return chosen - rejected


@exact_objective
def dpo(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    reference_chosen: Tensor,
    reference_rejected: Tensor,
    *,
    beta: Union[float, Tensor] = 0.1,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> Tensor:
    """Direct preference optimisation (conservative with ``label_smoothing``); see
    :class:`DPO`."""
    group = objective_group()
    check_reduction(reduction)
    eps = check_fraction("label_smoothing", label_smoothing, 0.0, 0.5)
    h = _log_ratio_margin(policy_chosen, policy_rejected, reference_chosen, reference_rejected)
    b = coefficient("beta", beta, h, group=group)
    rows = -F.logsigmoid(b * h)
    if eps > 0:
        rows = (1 - eps) * rows - eps * F.logsigmoid(-b * h)
    return reduce(rows, reduction, group=group)


class DPO(Objective, functional=dpo):
    """DPO: direct preference optimisation, and conservative DPO (label smoothing).

    Each pair is a prompt ``x`` with a preferred (chosen) response ``y_w`` and a dispreferred
    (rejected) one ``y_l``. The policy's implicit reward of a response is its log-likelihood
    ratio against a frozen reference model (usually the SFT model the policy starts from); the
    loss is the logistic loss of the reward margin, which raises the chosen response's
    likelihood relative to the rejected one without leaving the reference far behind
    (``beta`` sets how far: larger ``beta``, closer to the reference). Conservative DPO
    assumes each label is flipped with probability ``label_smoothing`` and mixes in the loss of
    the swapped pair. With ``rho(y) = log pi(y|x) - log pi_ref(y|x)`` (sequence
    log-probabilities: sums over the response tokens)::

        h    = rho(y_w) - rho(y_l)
        l    = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)
        loss = mean over pairs of l

    At ``pi = pi_ref`` every pair costs ``log 2``. The implicit rewards ``beta * rho`` are the
    usual training metrics; compute them from the same inputs (detached) when needed.

    The reference enters as labels: pass log-probabilities precomputed once for the data set,
    or those of a frozen copy computed under ``torch.no_grad()``; they are detached here
    either way. :func:`~contrastkit.losses.preference.sequence_log_probs` turns token logits
    and labels (prompt and padding at -100) into the sequence log-probabilities. Not
    engine-backed: one scalar per pair from log-probabilities the caller computed, O(N).
    Exact under a ``torch.distributed`` process group (the mean over the global batch of
    pairs).

    Args:
        beta (float or Tensor): inverse strength of the KL regularisation towards the
            reference, > 0 (a 0-dim tensor may be learned). Default 0.1.
        label_smoothing (float): ``eps`` in ``[0, 0.5]``, the assumed probability that a
            preference label is flipped (conservative DPO). Default 0 (DPO).
        reduction (str): ``"mean"`` over pairs (default), ``"sum"`` or ``"none"`` (``(N,)``).

    Inputs:
        ======================  ========  ===============================================
        input                   shape     meaning
        ======================  ========  ===============================================
        ``policy_chosen``       ``(N,)``  ``log pi(y_w | x)`` of the trained policy
        ``policy_rejected``     ``(N,)``  ``log pi(y_l | x)``
        ``reference_chosen``    ``(N,)``  ``log pi_ref(y_w | x)`` (detached)
        ``reference_rejected``  ``(N,)``  ``log pi_ref(y_l | x)`` (detached)
        ======================  ========  ===============================================

        Any floating dtypes (fp16/bf16 computed in fp32; a bf16 policy next to fp32 reference
        log-probabilities is fine).

    Example::

        import torch
        from contrastkit.losses.preference import DPO

        policy_chosen = torch.tensor([-12.0, -30.5, -8.2], requires_grad=True)
        policy_rejected = torch.tensor([-14.0, -29.0, -9.9], requires_grad=True)
        reference_chosen = torch.tensor([-12.5, -30.0, -8.0])
        reference_rejected = torch.tensor([-13.0, -29.5, -9.0])
        loss = DPO(beta=0.1)(policy_chosen, policy_rejected, reference_chosen, reference_rejected)
        loss.backward()

    See also:
        :class:`IPO` (squared loss on the same margin), :class:`NPO` (rejected responses
        only), :class:`SparsePO` (token-weighted), :class:`SimPO` (no reference).

    References:
        Rafailov, Sharma, Mitchell, Ermon, Manning, Finn, "Direct Preference Optimization: Your
        Language Model is Secretly a Reward Model", arXiv:2305.18290. Mitchell, "A note on DPO
        with noisy preferences and relationship to IPO" (2023; conservative DPO).
    """


@exact_objective
def ipo(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    reference_chosen: Tensor,
    reference_rejected: Tensor,
    *,
    beta: Union[float, Tensor] = 0.1,
    reduction: str = "mean",
) -> Tensor:
    """Identity preference optimisation; see :class:`IPO`."""
    group = objective_group()
    check_reduction(reduction)
    h = _log_ratio_margin(policy_chosen, policy_rejected, reference_chosen, reference_rejected)
    b = coefficient("beta", beta, h, group=group)
    rows = (h - 1 / (2 * b)) ** 2
    return reduce(rows, reduction, group=group)


class IPO(Objective, functional=ipo):
    """IPO: identity preference optimisation (the squared-loss form of DPO).

    DPO's logistic loss keeps pushing the reward margin of deterministic preferences towards
    infinity, so the KL regularisation stops acting. IPO regresses the margin of log-likelihood
    ratios onto a finite target ``1 / (2 beta)`` instead (``beta`` is the paper's ``tau``)::

        h    = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))
        l    = (h - 1 / (2 beta))^2
        loss = mean over pairs of l

    Which log-probabilities: TRL's IPO divides each response's log-ratio by its number of
    tokens (per-token means, agreed with the IPO authors); the DPO reference code uses sums.
    Both are this formula: pass sums (``sequence_log_probs(...)``) or per-token means
    (``sequence_log_probs(..., average=True)``; the division is linear, so policy and
    reference may be averaged separately). The reference is detached. Not engine-backed: one
    scalar per pair, O(N). Exact under a ``torch.distributed`` process group.

    Args:
        beta (float or Tensor): regularisation strength ``tau`` > 0; the target margin is
            ``1 / (2 beta)``. Default 0.1.
        reduction (str): ``"mean"`` over pairs (default), ``"sum"`` or ``"none"`` (``(N,)``).

    Inputs:
        ======================  ========  ===============================================
        input                   shape     meaning
        ======================  ========  ===============================================
        ``policy_chosen``       ``(N,)``  ``log pi(y_w | x)`` (sum or per-token mean)
        ``policy_rejected``     ``(N,)``  ``log pi(y_l | x)``
        ``reference_chosen``    ``(N,)``  ``log pi_ref(y_w | x)`` (detached)
        ``reference_rejected``  ``(N,)``  ``log pi_ref(y_l | x)`` (detached)
        ======================  ========  ===============================================

    Example::

        import torch
        from contrastkit.losses.preference import IPO

        policy_chosen = torch.tensor([-1.2, -0.9], requires_grad=True)  # per-token means
        policy_rejected = torch.tensor([-1.4, -1.1], requires_grad=True)
        reference_chosen = torch.tensor([-1.3, -1.0])
        reference_rejected = torch.tensor([-1.3, -1.0])
        loss = IPO(beta=0.5)(policy_chosen, policy_rejected, reference_chosen, reference_rejected)

    See also:
        :class:`DPO` (logistic loss on the same margin).

    References:
        Azar, Rowland, Piot, Guo, Calandriello, Valko, Munos, "A General Theoretical Paradigm
        to Understand Learning from Human Preferences", arXiv:2310.12036.
    """
