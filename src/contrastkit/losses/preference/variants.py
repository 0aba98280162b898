"""Reference-free direct-alignment variants on sequence log-probabilities of the policy:
SimPO, CPO, ORPO, SLiC-HF (exact under a process group: per-pair means; not engine-backed:
one scalar per pair, O(N))."""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._validation import check_reduction, check_tensor
from ...objective import Objective, exact_objective, objective_group, reduce
from ._common import (
    check_fraction,
    check_log_probs,
    check_nonnegative,
    coefficient,
    compute_type,
    policy,
)

__all__ = ["simpo", "SimPO", "cpo", "CPO", "orpo", "ORPO", "slic_hf", "SLiCHF"]


def _pair(policy_chosen, policy_rejected, **extra):
    check_log_probs({"policy_chosen": policy_chosen, "policy_rejected": policy_rejected}, 1)
    for name, x in extra.items():
        if x is not None:
            check_log_probs({name: x}, 1, rows=("policy_chosen", policy_chosen))
    dt = compute_type(policy_chosen, policy_rejected, *extra.values())
    return policy(policy_chosen, dt), policy(policy_rejected, dt), dt


def _smoothed(z: Tensor, eps: float) -> Tensor:
    rows = -F.logsigmoid(z)
    return rows if eps == 0 else (1 - eps) * rows - eps * F.logsigmoid(-z)


@exact_objective
def simpo(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    *,
    beta: Union[float, Tensor] = 2.0,
    gamma: float = 0.5,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> Tensor:
    """Simple preference optimisation (length-normalised, reference-free); see
    :class:`SimPO`."""
    group = objective_group()
    check_reduction(reduction)
    g = check_nonnegative("gamma", gamma)
    eps = check_fraction("label_smoothing", label_smoothing, 0.0, 0.5)
    w, l_, _ = _pair(policy_chosen, policy_rejected)
    b = coefficient("beta", beta, w, group=group)
    return reduce(_smoothed(b * (w - l_) - g, eps), reduction, group=group)


class SimPO(Objective, functional=simpo):
    """SimPO: simple preference optimisation with a reference-free, length-normalised reward.

    The implicit reward is the policy's **average** log-probability per response token (no
    reference model, no length bias of summed log-probabilities), scaled by ``beta``; the
    chosen response must beat the rejected one by a target margin ``gamma``::

        l    = -log sigmoid(beta (log pi(y_w) / |y_w| - log pi(y_l) / |y_l|) - gamma)
        loss = mean over pairs of l

    (with ``label_smoothing`` ``eps``: ``-(1 - eps) log sigmoid(z) - eps log sigmoid(-z)``, as
    the official trainer). Pass per-token mean log-probabilities
    (``sequence_log_probs(..., average=True)``). With ``gamma = 0`` and equal lengths this is
    reference-free DPO with ``beta / |y|``. Not engine-backed: one scalar per pair, O(N).
    Exact under a ``torch.distributed`` process group.

    Args:
        beta (float or Tensor): reward scale, > 0. Default 2.0 (the official default).
        gamma (float): target reward margin, >= 0. Default 0.5 (the official default
            ``gamma / beta = 0.25``).
        label_smoothing (float): in ``[0, 0.5]``. Default 0.
        reduction (str): ``"mean"`` over pairs (default), ``"sum"`` or ``"none"`` (``(N,)``).

    Inputs:
        ===================  ========  ====================================================
        input                shape     meaning
        ===================  ========  ====================================================
        ``policy_chosen``    ``(N,)``  ``log pi(y_w | x) / |y_w|`` (per-token mean)
        ``policy_rejected``  ``(N,)``  ``log pi(y_l | x) / |y_l|``
        ===================  ========  ====================================================

    Example::

        import torch
        from contrastkit.losses.preference import SimPO

        policy_chosen = torch.tensor([-0.8, -1.1, -0.6], requires_grad=True)
        policy_rejected = torch.tensor([-1.0, -1.0, -0.9], requires_grad=True)
        loss = SimPO()(policy_chosen, policy_rejected)

    See also:
        :class:`DPO` (reference model, summed log-probabilities), :class:`CPO`, :class:`ORPO`.

    References:
        Meng, Xia, Chen, "SimPO: Simple Preference Optimization with a Reference-Free Reward",
        arXiv:2405.14734.
    """


@exact_objective
def cpo(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    chosen_lengths: Optional[Tensor] = None,
    *,
    beta: Union[float, Tensor] = 0.1,
    nll_weight: float = 1.0,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> Tensor:
    """Contrastive preference optimisation; see :class:`CPO`."""
    group = objective_group()
    check_reduction(reduction)
    lam = check_nonnegative("nll_weight", nll_weight)
    eps = check_fraction("label_smoothing", label_smoothing, 0.0, 0.5)
    w, l_, dt = _pair(policy_chosen, policy_rejected)
    b = coefficient("beta", beta, w, group=group)
    rows = _smoothed(b * (w - l_), eps)
    if lam > 0:
        nll = -w
        if chosen_lengths is not None:
            check_tensor("chosen_lengths", chosen_lengths, ndim=1, kind="real", min_rows=0)
            if chosen_lengths.shape != policy_chosen.shape:
                raise ValueError(
                    f"chosen_lengths has shape {tuple(chosen_lengths.shape)} but policy_chosen "
                    f"has shape {tuple(policy_chosen.shape)}: one length per pair"
                )
            if chosen_lengths.device != policy_chosen.device:
                raise ValueError(
                    f"chosen_lengths is on {chosen_lengths.device} but policy_chosen is on "
                    f"{policy_chosen.device}"
                )
            if bool((chosen_lengths <= 0).any()):
                raise ValueError(
                    f"chosen_lengths must be > 0 (token counts), got {chosen_lengths.tolist()[:8]}"
                )
            nll = nll / chosen_lengths.detach().to(dt)
        rows = rows + lam * nll
    return reduce(rows, reduction, group=group)


class CPO(Objective, functional=cpo):
    """CPO: contrastive preference optimisation (reference-free DPO plus an NLL term).

    DPO without the reference model (its limit as the reference becomes uniform), with a
    behaviour-cloning term on the chosen response that keeps the policy close to the preferred
    data instead::

        l    = -log sigmoid(beta (log pi(y_w) - log pi(y_l))) + nll_weight * NLL(y_w)
        loss = mean over pairs of l

    ``NLL(y_w) = -log pi(y_w)``, divided by the chosen response's token count when
    ``chosen_lengths`` is given (TRL's CPO takes the token mean of the NLL over the batch:
    equal to this with ``chosen_lengths`` when all chosen lengths are equal; otherwise the
    weighting over pairs differs). With ``label_smoothing`` ``eps`` the logistic term becomes
    ``-(1 - eps) log sigmoid(z) - eps log sigmoid(-z)``. Without the NLL term
    (``nll_weight=0``) this is reference-free DPO. Pass summed log-probabilities
    (``sequence_log_probs``). Not engine-backed: one scalar per pair, O(N). Exact under a
    ``torch.distributed`` process group.

    Args:
        beta (float or Tensor): > 0. Default 0.1 (TRL's default).
        nll_weight (float): weight of the NLL term, >= 0 (TRL's ``cpo_alpha``). Default 1.
        label_smoothing (float): in ``[0, 0.5]``. Default 0.
        reduction (str): ``"mean"`` over pairs (default), ``"sum"`` or ``"none"`` (``(N,)``).

    Inputs:
        ===================  ========  ====================================================
        input                shape     meaning
        ===================  ========  ====================================================
        ``policy_chosen``    ``(N,)``  ``log pi(y_w | x)`` (sum over response tokens)
        ``policy_rejected``  ``(N,)``  ``log pi(y_l | x)``
        ``chosen_lengths``   ``(N,)``  optional: response token counts of ``y_w`` (> 0)
        ===================  ========  ====================================================

    Example::

        import torch
        from contrastkit.losses.preference import CPO

        policy_chosen = torch.tensor([-12.0, -20.0], requires_grad=True)
        policy_rejected = torch.tensor([-15.0, -19.0], requires_grad=True)
        loss = CPO()(policy_chosen, policy_rejected, torch.tensor([10, 16]))

    See also:
        :class:`DPO`, :class:`SimPO`, :class:`ORPO`.

    References:
        Xu et al., "Contrastive Preference Optimization: Pushing the Boundaries of LLM
        Performance in Machine Translation", arXiv:2401.08417.
    """


def _log1mexp(x: Tensor) -> Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, stable at both ends."""
    return torch.where(
        x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x))
    )


@exact_objective
def orpo(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    *,
    beta: Union[float, Tensor] = 0.1,
    reduction: str = "mean",
) -> Tensor:
    """Odds-ratio preference optimisation; see :class:`ORPO`."""
    group = objective_group()
    check_reduction(reduction)
    w, l_, _ = _pair(policy_chosen, policy_rejected)
    for name, x in (("policy_chosen", w), ("policy_rejected", l_)):
        if bool((x >= 0).any()):
            raise ValueError(
                f"{name} must be < 0 (per-token mean log-probabilities; a probability of 1 "
                f"has infinite odds), got max {float(x.max())}"
            )
    b = coefficient("beta", beta, w, group=group)
    log_odds = (w - l_) - (_log1mexp(w) - _log1mexp(l_))
    rows = -w - b * F.logsigmoid(log_odds)
    return reduce(rows, reduction, group=group)


class ORPO(Objective, functional=orpo):
    """ORPO: monolithic odds-ratio preference optimisation (SFT and preference in one loss).

    Supervised fine-tuning on the chosen response plus a penalty on the log odds ratio of the
    chosen against the rejected response; no reference model and no separate SFT stage. With
    ``P(y) = exp(mean-token log pi(y | x))`` and ``odds(y) = P / (1 - P)``::

        l    = -log P(y_w) - beta log sigmoid(log odds(y_w) - log odds(y_l))
        loss = mean over pairs of l

    (``beta`` is the paper's ``lambda``). Pass per-token mean log-probabilities
    (``sequence_log_probs(..., average=True)``), all < 0. The NLL term here is each pair's
    per-token mean; TRL's ORPO takes the token mean over the batch's chosen tokens, the same
    when all chosen lengths are equal. ``log(1 - P)`` is evaluated stably. Not engine-backed:
    one scalar per pair, O(N). Exact under a ``torch.distributed`` process group.

    Args:
        beta (float or Tensor): weight ``lambda`` of the odds-ratio term, > 0. Default 0.1
            (TRL's default).
        reduction (str): ``"mean"`` over pairs (default), ``"sum"`` or ``"none"`` (``(N,)``).

    Inputs:
        ===================  ========  ====================================================
        input                shape     meaning
        ===================  ========  ====================================================
        ``policy_chosen``    ``(N,)``  mean-token ``log pi(y_w | x)`` (< 0)
        ``policy_rejected``  ``(N,)``  mean-token ``log pi(y_l | x)`` (< 0)
        ===================  ========  ====================================================

    Example::

        import torch
        from contrastkit.losses.preference import ORPO

        policy_chosen = torch.tensor([-0.7, -1.2], requires_grad=True)
        policy_rejected = torch.tensor([-1.1, -1.0], requires_grad=True)
        loss = ORPO(beta=0.1)(policy_chosen, policy_rejected)

    See also:
        :class:`SimPO`, :class:`CPO` (reference-free as well).

    References:
        Hong, Lee, Thorne, "ORPO: Monolithic Preference Optimization without Reference
        Model", arXiv:2403.07691.
    """


@exact_objective
def slic_hf(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    policy_target: Optional[Tensor] = None,
    *,
    margin: float = 1.0,
    nll_weight: float = 0.5,
    reduction: str = "mean",
) -> Tensor:
    """Sequence likelihood calibration with human feedback; see :class:`SLiCHF`."""
    group = objective_group()
    check_reduction(reduction)
    delta = check_nonnegative("margin", margin)
    lam = check_nonnegative("nll_weight", nll_weight)
    w, l_, dt = _pair(policy_chosen, policy_rejected, policy_target=policy_target)
    target = w if policy_target is None else policy(policy_target, dt)
    rows = torch.relu(delta - w + l_) - lam * target
    return reduce(rows, reduction, group=group)


class SLiCHF(Objective, functional=slic_hf):
    """SLiC-HF: sequence likelihood calibration from human feedback (rank hinge + NLL).

    A hinge on the policy's log-likelihood margin between the chosen and the rejected
    response (no reference model), regularised by the likelihood of a target sequence
    ``y_ref`` (the SFT target; by default the chosen response)::

        l    = max(0, margin - log pi(y_w) + log pi(y_l)) - nll_weight * log pi(y_ref)
        loss = mean over pairs of l

    Pass summed log-probabilities (``sequence_log_probs``). The defaults (``margin=1``,
    ``nll_weight=0.5``) are illustrative: the paper's values were not confirmed against
    code. Not engine-backed: one scalar per pair, O(N). Exact under a ``torch.distributed``
    process group.

    Args:
        margin (float): ``delta`` >= 0. Default 1.0.
        nll_weight (float): ``lambda`` >= 0 (0 drops the regulariser). Default 0.5.
        reduction (str): ``"mean"`` over pairs (default), ``"sum"`` or ``"none"`` (``(N,)``).

    Inputs:
        ===================  ========  ====================================================
        input                shape     meaning
        ===================  ========  ====================================================
        ``policy_chosen``    ``(N,)``  ``log pi(y_w | x)``
        ``policy_rejected``  ``(N,)``  ``log pi(y_l | x)``
        ``policy_target``    ``(N,)``  optional ``log pi(y_ref | x)`` (default: ``y_w``)
        ===================  ========  ====================================================

    Example::

        import torch
        from contrastkit.losses.preference import SLiCHF

        policy_chosen = torch.tensor([-12.0, -20.0], requires_grad=True)
        policy_rejected = torch.tensor([-12.5, -25.0], requires_grad=True)
        loss = SLiCHF(margin=1.0)(policy_chosen, policy_rejected)

    See also:
        :class:`DPO` (logistic loss with a reference), :class:`CPO`.

    References:
        Zhao, Joshi, Liu, Khalman, Saleh, Liu, "SLiC-HF: Sequence Likelihood Calibration with
        Human Feedback", arXiv:2305.10425.
    """
