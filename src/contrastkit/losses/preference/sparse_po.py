"""SparsePO: token-weighted preference optimisation with sparse token masks on the reward and
on the token-level KL term (exact under a process group: a per-pair mean; not engine-backed:
O(N L) from token log-probabilities)."""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._validation import check_reduction, check_tensor
from ...objective import Objective, exact_objective, objective_group, reduce
from ._common import check_log_probs, check_nonnegative, coefficient, compute_type
from ._common import policy as _policy
from ._common import reference as _reference

__all__ = ["sparse_po", "SparsePO"]


def _pairs(first: str, a, second: str, b) -> bool:
    if (a is None) != (b is None):
        given, missing = (first, second) if b is None else (second, first)
        raise ValueError(f"{given} is given but {missing} is None: pass both or neither")
    return a is not None


def _side(name: str, tokens: Tensor, mask: Tensor, extra: dict, rows) -> None:
    check_log_probs({name: tokens, **extra}, 2, rows=rows)
    check_tensor(
        name.split("_", 1)[1] + "_mask", mask, kind="bool", shape=tuple(tokens.shape), min_rows=0
    )
    if mask.device != tokens.device:
        raise ValueError(f"the mask of {name} is on {mask.device} but {name} on {tokens.device}")


@exact_objective
def sparse_po(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    reference_chosen: Tensor,
    reference_rejected: Tensor,
    chosen_mask: Tensor,
    rejected_mask: Tensor,
    chosen_weights: Optional[Tensor] = None,
    rejected_weights: Optional[Tensor] = None,
    chosen_kl: Optional[Tensor] = None,
    rejected_kl: Optional[Tensor] = None,
    chosen_kl_weights: Optional[Tensor] = None,
    rejected_kl_weights: Optional[Tensor] = None,
    *,
    beta: Union[float, Tensor] = 0.1,
    reward_l1: float = 0.001,
    kl_l1: float = 0.001,
    reduction: str = "mean",
) -> Tensor:
    """Token-weighted preference optimisation with sparse masks; see :class:`SparsePO`."""
    group = objective_group()
    check_reduction(reduction)
    lam_u = check_nonnegative("reward_l1", reward_l1)
    lam_d = check_nonnegative("kl_l1", kl_l1)
    weighted = _pairs("chosen_weights", chosen_weights, "rejected_weights", rejected_weights)
    with_kl = _pairs("chosen_kl", chosen_kl, "rejected_kl", rejected_kl)
    kl_weighted = _pairs(
        "chosen_kl_weights", chosen_kl_weights, "rejected_kl_weights", rejected_kl_weights
    )
    if kl_weighted and not with_kl:
        raise ValueError("chosen_kl_weights weight the KL terms: pass chosen_kl and rejected_kl")
    chosen = {
        "reference_chosen": reference_chosen,
        "chosen_weights": chosen_weights,
        "chosen_kl": chosen_kl,
        "chosen_kl_weights": chosen_kl_weights,
    }
    rejected = {
        "reference_rejected": reference_rejected,
        "rejected_weights": rejected_weights,
        "rejected_kl": rejected_kl,
        "rejected_kl_weights": rejected_kl_weights,
    }
    _side("policy_chosen", policy_chosen, chosen_mask, chosen, None)
    _side(
        "policy_rejected", policy_rejected, rejected_mask, rejected,
        ("policy_chosen", policy_chosen),
    )  # fmt: skip
    dt = compute_type(policy_chosen, policy_rejected, reference_chosen, reference_rejected)
    masks = (chosen_mask.to(dt), rejected_mask.to(dt))

    def side(x, i):
        return None if x is None else _policy(x, dt) * masks[i]

    r_w = (_policy(policy_chosen, dt) - _reference(reference_chosen, dt)) * masks[0]
    r_l = (_policy(policy_rejected, dt) - _reference(reference_rejected, dt)) * masks[1]
    m_w, m_l = side(chosen_weights, 0), side(rejected_weights, 1)
    u = (r_w if m_w is None else m_w * r_w).sum(-1) - (r_l if m_l is None else m_l * r_l).sum(-1)
    rows_l1 = torch.zeros_like(u)
    if weighted and lam_u > 0:
        rows_l1 = rows_l1 + lam_u * (m_w.abs().sum(-1) + m_l.abs().sum(-1))
    margin = u
    if with_kl:
        k_w, k_l = side(chosen_kl, 0), side(rejected_kl, 1)
        d_w, d_l = side(chosen_kl_weights, 0), side(rejected_kl_weights, 1)
        if d_w is not None:
            k_w, k_l = d_w * k_w, d_l * k_l
            if lam_d > 0:
                rows_l1 = rows_l1 + lam_d * (d_w.abs().sum(-1) + d_l.abs().sum(-1))
        # the code's d = sum m k_w - sum m k_l with k = -KL(p_ref || pi)
        margin = u + k_w.sum(-1) - k_l.sum(-1)
    b = coefficient("beta", beta, u, group=group)
    rows = -F.logsigmoid(b * margin) + rows_l1
    return reduce(rows, reduction, group=group)


class SparsePO(Objective, functional=sparse_po):
    """SparsePO: preference optimisation with sparse token masks on the reward and the KL.

    DPO credits every token of a response equally. SparsePO (a TDPO-style token-level
    objective) weights each response token's log-ratio reward, and its token-level KL
    term, by a mask in ``[0, 1]`` produced by a small mask network (or derived from the
    reference model); an L1 penalty on the masks makes them sparse, so that only the tokens
    that carry the preference move. Per response token ``t`` (response tokens only: the
    ``chosen_mask`` / ``rejected_mask``)::

        r_t  = log pi(y_t) - log pi_ref(y_t)
        KL_t = KL(p_ref(. | ctx_t) || pi(. | ctx_t))       (over the vocabulary, >= 0)
        u    = sum_t mu_t r^w_t - sum_t mu_t r^l_t          (mu: chosen/rejected_weights)
        d    = sum_t md_t KL^l_t - sum_t md_t KL^w_t        (md: chosen/rejected_kl_weights)
        l    = -log sigmoid(beta (u - d))
               + reward_l1 (||mu^w||_1 + ||mu^l||_1) + kl_l1 (||md^w||_1 + ||md^l||_1)
        loss = mean over pairs of l

    (The official code writes ``d`` with ``k_t = -KL_t``: ``d = sum md k^w - sum md k^l``.)
    Omitted inputs switch parts off: without weights the masks are 1 and carry no L1 term;
    without ``chosen_kl`` / ``rejected_kl`` there is no ``d``. All masks 1 and no KL is
    :class:`DPO` on summed log-probabilities; all masks 1 with the KL is TDPO1. A common mask
    for reward and KL: pass the same tensors as both weights (the README then halves the two
    L1 coefficients). :func:`~contrastkit.losses.preference.token_log_probs` gives the token
    log-probabilities and the response mask, :func:`~contrastkit.losses.preference.token_kl`
    the token KLs (from policy and reference logits); the reference is detached, the KL
    terms and weights carry gradients. Not engine-backed: O(N L) from token quantities the
    caller computed. Exact under a ``torch.distributed`` process group.

    Args:
        beta (float or Tensor): > 0. Default 0.1 (the README's value for HH; 0.8 for IMDB
            and TL;DR).
        reward_l1 (float): L1 coefficient of the reward masks, >= 0. Default 0.001.
        kl_l1 (float): L1 coefficient of the KL masks, >= 0. Default 0.001.
        reduction (str): ``"mean"`` over pairs (default), ``"sum"`` or ``"none"`` (``(N,)``).

    Inputs:
        =========================  ============  ============================================
        input                      shape         meaning
        =========================  ============  ============================================
        ``policy_chosen``          ``(N, Lw)``   token ``log pi(y_t)`` of the chosen response
        ``policy_rejected``        ``(N, Ll)``   token ``log pi(y_t)`` of the rejected one
        ``reference_chosen``       ``(N, Lw)``   token ``log pi_ref(y_t)`` (detached)
        ``reference_rejected``     ``(N, Ll)``   token ``log pi_ref(y_t)`` (detached)
        ``chosen_mask``            ``(N, Lw)``   bool, True on response tokens
        ``rejected_mask``          ``(N, Ll)``   bool, True on response tokens
        ``chosen_weights``         ``(N, Lw)``   optional reward mask ``mu`` (float, learned)
        ``rejected_weights``       ``(N, Ll)``   optional, given with ``chosen_weights``
        ``chosen_kl``              ``(N, Lw)``   optional token ``KL(p_ref || pi)``
        ``rejected_kl``            ``(N, Ll)``   optional, given with ``chosen_kl``
        ``chosen_kl_weights``      ``(N, Lw)``   optional KL mask ``md`` (needs the KLs)
        ``rejected_kl_weights``    ``(N, Ll)``   optional, given with ``chosen_kl_weights``
        =========================  ============  ============================================

    Example::

        import torch
        from contrastkit.losses.preference import SparsePO

        n, lw, ll = 2, 5, 4
        policy_chosen = (-2 * torch.rand(n, lw)).requires_grad_()
        policy_rejected = (-2 * torch.rand(n, ll)).requires_grad_()
        reference_chosen, reference_rejected = -2 * torch.rand(n, lw), -2 * torch.rand(n, ll)
        chosen_mask = torch.tensor([[0, 1, 1, 1, 1], [0, 0, 1, 1, 0]]).bool()
        rejected_mask = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 0]]).bool()
        weights_w = torch.rand(n, lw, requires_grad=True)  # from a mask network
        weights_l = torch.rand(n, ll, requires_grad=True)
        loss = SparsePO(beta=0.1)(
            policy_chosen, policy_rejected, reference_chosen, reference_rejected,
            chosen_mask, rejected_mask, weights_w, weights_l,
        )
        loss.backward()

    See also:
        :class:`DPO` (sequence level, every token weighted 1).

    References:
        Christopoulou et al., "SparsePO: Controlling Preference
        Alignment of LLMs via Sparse Token Masks", arXiv:2410.05102.
        Zeng et al., "Token-level Direct Preference Optimization", arXiv:2404.11999.
    """
