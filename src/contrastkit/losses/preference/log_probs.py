"""From a causal language model's token logits to the log-probabilities the preference
objectives take: per-token log-probabilities of the labels, their per-sequence sum (or mean
over the response tokens), and the per-token KL divergence of the reference's next-token
distribution from the policy's (SparsePO, TDPO).

Conventions (those of Hugging Face causal LMs, TRL and the DPO reference code): ``logits``
``(B, T, V)`` are the model outputs over ``input_ids`` ``(B, T)``; ``labels`` are the
``input_ids`` with the prompt and padding positions set to ``ignore_index`` (-100); with
``shift=True`` (default) the logits at position ``t`` score the label at ``t + 1``. The
result covers ``T - 1`` positions (``T`` with ``shift=False``); masked positions hold 0.

The reference model is frozen: call it under ``torch.no_grad()`` (or precompute its
log-probabilities once for the data set); the objectives detach reference tensors anyway.
These helpers build the ``(B, T, V)`` log-softmax, like TRL; nothing here is engine-backed.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..._validation import check_tensor
from ...engine import compute_dtype

__all__ = ["sequence_log_probs", "token_kl", "token_log_probs"]


def _check_logits(name: str, logits) -> None:
    check_tensor(name, logits, ndim=3, kind="float", min_rows=0)
    if logits.shape[-1] == 0:
        raise ValueError(f"{name} has an empty vocabulary dimension, shape {tuple(logits.shape)}")


def _response(labels: Tensor, mask: Optional[Tensor], shift: bool, ignore_index: int):
    if shift:
        labels = labels[:, 1:]
        mask = None if mask is None else mask[:, 1:]
    valid = labels != ignore_index
    if mask is not None:
        valid = valid & mask
    return labels, valid


def token_log_probs(
    logits: Tensor,
    labels: Tensor,
    mask: Optional[Tensor] = None,
    *,
    shift: bool = True,
    ignore_index: int = -100,
) -> tuple[Tensor, Tensor]:
    """Per-token log-probabilities ``log pi(y_t | x, y_<t)`` of ``labels`` under ``logits``.

    Args:
        logits: ``(B, T, V)`` token logits (any floating dtype; fp16/bf16 computed in fp32).
        labels: ``(B, T)`` integer token ids, ``ignore_index`` at prompt and padding positions.
        mask: optional ``(B, T)`` bool, ``True`` on the response tokens (an alternative or an
            addition to ``ignore_index``).
        shift: the logits at ``t`` predict the label at ``t + 1`` (causal LMs). Default True.
        ignore_index: the label value of positions that carry no term. Default -100.

    Returns:
        ``(log_probs, response_mask)``: ``(B, T')`` log-probabilities (0 where masked) in the
        compute dtype and the ``(B, T')`` bool mask of the response tokens, ``T' = T - 1``
        with ``shift`` (``T`` otherwise).
    """
    _check_logits("logits", logits)
    check_tensor("labels", labels, ndim=2, kind="int", min_rows=0)
    if labels.shape != logits.shape[:2]:
        raise ValueError(
            f"labels must have shape {tuple(logits.shape[:2])} (the first two dimensions of "
            f"logits), got {tuple(labels.shape)}"
        )
    if mask is not None:
        check_tensor("mask", mask, kind="bool", shape=tuple(labels.shape), min_rows=0)
    if labels.device != logits.device:
        raise ValueError(f"labels is on {labels.device} but logits is on {logits.device}")
    if shift:
        logits = logits[:, :-1]
    labels, valid = _response(labels, mask, shift, ignore_index)
    V = logits.shape[-1]
    bad = valid & ((labels < 0) | (labels >= V))
    if bool(bad.any()):
        raise ValueError(
            f"labels holds {int(bad.sum())} token ids outside [0, {V}) (the vocabulary of "
            f"logits) at response positions, e.g. {labels[bad][:4].tolist()}"
        )
    u = logits.to(compute_dtype(logits.dtype))
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    picked = u.gather(-1, safe.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(u, dim=-1)
    return torch.where(valid, picked, torch.zeros_like(picked)), valid


def sequence_log_probs(
    logits: Tensor,
    labels: Tensor,
    mask: Optional[Tensor] = None,
    *,
    average: bool = False,
    shift: bool = True,
    ignore_index: int = -100,
) -> Tensor:
    """Sequence log-probabilities ``log pi(y | x) = sum_t log pi(y_t | x, y_<t)`` over the
    response tokens, ``(B,)``: the input of :func:`dpo`, :func:`npo` and the other sequence
    objectives.

    ``average=True`` divides by the number of response tokens (0 for a row without any):
    the length-normalised log-probability of IPO as TRL runs it, SimPO and ORPO. Arguments as
    :func:`token_log_probs`.
    """
    if not isinstance(average, bool):
        raise ValueError(f"average must be a bool, got {average!r}")
    lp, valid = token_log_probs(logits, labels, mask, shift=shift, ignore_index=ignore_index)
    total = lp.sum(-1)
    if not average:
        return total
    return total / valid.sum(-1).clamp(min=1).to(total.dtype)


def token_kl(policy_logits: Tensor, reference_logits: Tensor, *, shift: bool = True) -> Tensor:
    """Per-token ``KL(p_ref || pi) = sum_v p_ref(v) (log p_ref(v) - log pi(v))`` of the
    next-token distributions, ``(B, T')`` (>= 0; ``T' = T - 1`` with ``shift``, dropping the
    last position as :func:`token_log_probs` does). The reference is detached. Mask it with
    the response mask of :func:`token_log_probs` (:func:`sparse_po` does).
    """
    _check_logits("policy_logits", policy_logits)
    _check_logits("reference_logits", reference_logits)
    if reference_logits.shape != policy_logits.shape:
        raise ValueError(
            f"reference_logits has shape {tuple(reference_logits.shape)} but policy_logits has "
            f"shape {tuple(policy_logits.shape)}: they must match"
        )
    if reference_logits.device != policy_logits.device:
        raise ValueError(
            f"reference_logits is on {reference_logits.device} but policy_logits is on "
            f"{policy_logits.device}"
        )
    if shift:
        policy_logits, reference_logits = policy_logits[:, :-1], reference_logits[:, :-1]
    dt = compute_dtype(policy_logits.dtype)
    log_pi = torch.log_softmax(policy_logits.to(dt), dim=-1)
    log_ref = torch.log_softmax(reference_logits.detach().to(dt), dim=-1)
    return (log_ref.exp() * (log_ref - log_pi)).sum(-1)
