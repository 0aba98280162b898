"""D2O: distributional dispreference optimisation, alignment from negative responses and the
model's own samples (exact under a process group: a per-prompt mean; not engine-backed: O(N K)
from log-probabilities)."""

from __future__ import annotations

from typing import Union

import torch.nn.functional as F
from torch import Tensor

from ..._validation import check_reduction
from ...objective import Objective, exact_objective, objective_group, reduce
from ._common import check_log_probs, coefficient, compute_type, policy, reference

__all__ = ["d2o", "D2O"]


@exact_objective
def d2o(
    policy_samples: Tensor,
    policy_rejected: Tensor,
    reference_samples: Tensor,
    reference_rejected: Tensor,
    *,
    beta: Union[float, Tensor] = 0.1,
    alpha: Union[float, Tensor] = 0.1,
    reduction: str = "mean",
) -> Tensor:
    """Distributional dispreference optimisation; see :class:`D2O`."""
    group = objective_group()
    check_reduction(reduction)
    check_log_probs({"policy_samples": policy_samples, "reference_samples": reference_samples}, 2)
    check_log_probs(
        {"policy_rejected": policy_rejected, "reference_rejected": reference_rejected},
        1,
        rows=("policy_samples", policy_samples),
    )
    if policy_samples.shape[1] < 1:
        raise ValueError(
            "policy_samples needs at least 1 sample per prompt (K >= 1), got shape "
            f"{tuple(policy_samples.shape)}"
        )
    dt = compute_type(policy_samples, policy_rejected, reference_samples, reference_rejected)
    samples = (policy(policy_samples, dt) - reference(reference_samples, dt)).mean(1)
    rejected = policy(policy_rejected, dt) - reference(reference_rejected, dt)
    b = coefficient("beta", beta, samples, group=group)
    a = coefficient("alpha", alpha, samples, group=group)
    rows = -F.logsigmoid(b * samples - a * rejected)
    return reduce(rows, reduction, group=group)


class D2O(Objective, functional=d2o):
    """D2O: distributional dispreference optimisation (alignment without positive samples).

    Each prompt ``x`` comes with a human-annotated harmful (rejected) response ``y_l`` and K
    responses ``y_1..y_K`` sampled from the initial (SFT) model, stand-ins for the model's own
    distribution. The mean implicit reward of the samples must exceed that of the rejected
    response: DPO with the chosen response replaced by the sample distribution. Two frozen
    references: ``pi_r^-`` scores the samples, ``pi_r^+`` the rejected response (in the
    simplest setting both are the SFT model)::

        s    = (1/K) sum_k [log pi(y_k | x) - log pi_r^-(y_k | x)]
        r    = log pi(y_l | x) - log pi_r^+(y_l | x)
        l    = -log sigmoid(beta s - alpha r)
        loss = mean over prompts of l

    With K = 1 and ``alpha = beta`` this is :class:`DPO` with ``y_w = y_1``; at ``pi`` equal
    to both references each prompt costs ``log 2``; the loss is invariant to the order of the
    K samples. The references are detached (precomputed, or frozen copies under
    ``torch.no_grad()``). No official code was found; the paper's hyper-parameters (beta,
    alpha, K) were not confirmed, hence ``alpha = beta = 0.1`` as DPO's default. Not
    engine-backed: O(N K) from log-probabilities the caller computed. Exact under a
    ``torch.distributed`` process group (the mean over the global batch of prompts).

    Args:
        beta (float or Tensor): coefficient of the samples' mean log-ratio, > 0. Default 0.1.
        alpha (float or Tensor): coefficient of the rejected response's log-ratio, > 0.
            Default 0.1.
        reduction (str): ``"mean"`` over prompts (default), ``"sum"`` or ``"none"`` (``(N,)``).

    Inputs:
        ======================  ==========  ===========================================
        input                   shape       meaning
        ======================  ==========  ===========================================
        ``policy_samples``      ``(N, K)``  ``log pi(y_k | x)`` of K >= 1 self-generated
                                            responses per prompt
        ``policy_rejected``     ``(N,)``    ``log pi(y_l | x)`` of the harmful response
        ``reference_samples``   ``(N, K)``  ``log pi_r^-(y_k | x)`` (detached)
        ``reference_rejected``  ``(N,)``    ``log pi_r^+(y_l | x)`` (detached)
        ======================  ==========  ===========================================

    Example::

        import torch
        from contrastkit.losses.preference import D2O

        policy_samples = torch.tensor([[-20.0, -22.0, -18.5], [-9.0, -11.0, -10.0]])
        policy_samples.requires_grad_()
        policy_rejected = torch.tensor([-25.0, -14.0], requires_grad=True)
        reference_samples = torch.tensor([[-20.5, -21.0, -19.0], [-9.5, -10.0, -10.5]])
        reference_rejected = torch.tensor([-24.0, -13.5])
        loss = D2O()(policy_samples, policy_rejected, reference_samples, reference_rejected)

    See also:
        :class:`DPO` (one chosen response), :class:`NPO` (rejected responses only).

    References:
        Duan et al., "Negating Negatives: Alignment without Human Positive
        Samples via Distributional Dispreference Optimization", arXiv:2403.03419.
    """
