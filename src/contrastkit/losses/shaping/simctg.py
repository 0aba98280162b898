"""SimCTG: token-level contrastive training objective (Su et al., "A Contrastive Framework for
Neural Text Generation", NeurIPS 2022, arXiv 2202.06417; yxuansu/SimCTG ``SimCTGLoss``).

With ``h = normalize(H_b)`` the last hidden states of sequence ``b`` and ``s_ij = <h_i, h_j>``::

    L_CL = sum_b sum_{valid i != j} max(0, rho - (s_ii - s_ij)) / #(valid ordered pairs)
         = sum_b sum_{valid i != j} relu(rho - 1 + s_ij) / #pairs            (s_ii = 1)

    L = L_MLE + L_CL,   L_MLE = token cross-entropy of the logits against the labels

``rho = 0.5`` (margin; 0 disables L_CL). Valid tokens come from ``attention_mask`` or from
``input_ids != pad_token_id`` (the official code takes the first ``valid_len`` positions, the
same for right padding). Labels are used as given (no shift), ``ignore_index`` -100 as
``CrossEntropyLoss``. With fewer than two valid tokens L_CL is 0.

Two objectives: :func:`simctg` / :class:`SimCTG` (``L_MLE + L_CL``, published before as
``simctg_loss`` / ``SimCTGLoss``) and its token-level term alone, :func:`simctg_contrastive` /
:class:`SimCTGContrastive`. Per-sequence rows (``reduction="none"``): row ``b`` is sequence
``b``'s share of the batch loss (its hinge sum over the batch's pair count, its cross-entropy
sum over the batch's token count) times ``B``, so the mean of the rows is the paper's loss.

Computation: the loss is a sum over (sequence, token) rows of an elementwise hinge over the
same sequence's tokens, i.e. B block-diagonal ``T x T`` problems. The shared engine's elementwise
term is SigLIP's softplus over every candidate (no pair masks), so SimCTG uses its own exact
tiled sweep over query-token blocks: forward sums the hinge per block; backward recomputes the
block's similarities, ``dL/dh_i = 2/#pairs sum_j 1[s_ij > 1 - rho] m_ij h_j`` (the pair set is
symmetric). Memory ``O(B T (d + b))`` instead of ``O(B T^2)``; ``backend="dense"`` materialises
``(B, T, T)`` with autograd.

Exactness: rank-local. The pair and token counts that normalise the loss are this rank's (the
official code is per process).

Decoding: contrastive search is in Hugging Face transformers,
``model.generate(..., penalty_alpha=0.6, top_k=4)``; it is not re-implemented here.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._validation import check_embeddings, check_index
from ...objective import EPS, Objective, engine_args, rank_local_objective, reduce

__all__ = [
    "simctg",
    "SimCTG",
    "simctg_contrastive",
    "SimCTGContrastive",
    "simctg_loss",
    "SimCTGLoss",
]

#: elements per (B, b, T) block of the tiled sweep
_BLOCK_ELEMS = 1 << 22
#: auto uses the dense path up to this many (B T T) similarities
_DENSE_MAX = 1 << 20


class _HingeSum(torch.autograd.Function):
    """Per sequence b: sum_{i != j, both valid} relu(margin - 1 + <h_i, h_j>) over (B, T, d)
    unit rows; returns (B,)."""

    @staticmethod
    def forward(ctx, h, valid, margin, rows):
        Bn, T, _ = h.shape
        total = h.new_zeros(Bn)
        thr = 1.0 - margin
        for r0 in range(0, T, rows):
            r1 = min(T, r0 + rows)
            s = torch.bmm(h[:, r0:r1], h.transpose(1, 2))  # (B, b, T)
            m = valid[:, r0:r1, None] & valid[:, None, :]
            m[:, torch.arange(r1 - r0), torch.arange(r0, r1)] = False
            total = total + torch.where(m, torch.clamp(s - thr, min=0), 0.0).sum(dim=(1, 2))
        ctx.save_for_backward(h, valid)
        ctx.margin, ctx.rows = margin, rows
        return total

    @staticmethod
    def backward(ctx, g):
        h, valid = ctx.saved_tensors
        Bn, T, _ = h.shape
        thr = 1.0 - ctx.margin
        dh = torch.zeros_like(h)
        for r0 in range(0, T, ctx.rows):
            r1 = min(T, r0 + ctx.rows)
            s = torch.bmm(h[:, r0:r1], h.transpose(1, 2))
            m = valid[:, r0:r1, None] & valid[:, None, :]
            m[:, torch.arange(r1 - r0), torch.arange(r0, r1)] = False
            active = (m & (s > thr)).to(h.dtype)
            dh[:, r0:r1] = torch.bmm(active, h)
        return dh * (2 * g)[:, None, None], None, None, None


def _valid_mask(hidden, attention_mask, input_ids, pad_token_id) -> Tensor:
    Bn, T = hidden.shape[:2]
    if attention_mask is not None:
        if not isinstance(attention_mask, Tensor) or tuple(attention_mask.shape) != (Bn, T):
            raise ValueError(
                f"attention_mask must have shape ({Bn}, {T}), got "
                f"{tuple(getattr(attention_mask, 'shape', ()))}"
            )
        return attention_mask.to(hidden.device) != 0
    if input_ids is not None:
        if not isinstance(input_ids, Tensor) or tuple(input_ids.shape) != (Bn, T):
            raise ValueError(
                f"input_ids must have shape ({Bn}, {T}), "
                f"got {tuple(getattr(input_ids, 'shape', ()))}"
            )
        if pad_token_id is None:
            return torch.ones(Bn, T, dtype=torch.bool, device=hidden.device)
        return input_ids.to(hidden.device) != pad_token_id
    return torch.ones(Bn, T, dtype=torch.bool, device=hidden.device)


def _hinge_rows(h: Tensor, valid: Tensor, margin: float, eng: dict, chunk_size) -> Tensor:
    """Per-sequence hinge sums ``(B,)`` of unit hidden states ``h (B, T, d)``."""
    Bn, T, _ = h.shape
    dense = eng["backend"] == "dense" or (
        eng["backend"] == "auto" and chunk_size is None and Bn * T * T <= _DENSE_MAX
    )
    if dense:
        s = h @ h.transpose(1, 2)
        m = valid[:, :, None] & valid[:, None, :] & ~torch.eye(T, dtype=torch.bool, device=h.device)
        return torch.where(m, F.relu(margin - 1.0 + s), 0.0).sum(dim=(1, 2))
    rows = chunk_size or max(1, min(T, _BLOCK_ELEMS // max(1, Bn * T)))
    return _HingeSum.apply(h, valid, float(margin), rows)


def _contrastive_rows(hidden_states, attention_mask, input_ids, pad_token_id, margin, eng, cs):
    """``B * hinge_b / #pairs`` per sequence (zeros without pairs or with ``margin == 0``)."""
    check_embeddings("hidden_states", hidden_states, ndim=3)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin >= 0:
        raise ValueError(f"margin must be a number >= 0, got {margin!r}")
    valid = _valid_mask(hidden_states, attention_mask, input_ids, pad_token_id)
    counts = valid.sum(dim=1).to(torch.float64)
    n_pairs = float((counts * (counts - 1)).sum())
    h = F.normalize(
        hidden_states.float()
        if hidden_states.dtype in (torch.float16, torch.bfloat16)
        else hidden_states,
        dim=-1,
        eps=EPS,
    )
    if n_pairs == 0 or margin == 0:
        return (h * 0).sum(dim=(1, 2))
    return _hinge_rows(h, valid, margin, eng, cs) * (h.shape[0] / n_pairs)


@rank_local_objective
def simctg_contrastive(
    hidden_states: Tensor,
    attention_mask: Optional[Tensor] = None,
    input_ids: Optional[Tensor] = None,
    *,
    margin: float = 0.5,
    pad_token_id: Optional[int] = None,
    reduction: str = "mean",
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """SimCTG's token-level contrastive term ``L_CL`` of ``hidden_states``; see
    :class:`SimCTGContrastive`."""
    eng = engine_args(chunk_size, backend)
    rows = _contrastive_rows(
        hidden_states, attention_mask, input_ids, pad_token_id, margin, eng, chunk_size
    )
    return reduce(rows, reduction, group=None)


@rank_local_objective
def simctg(
    hidden_states: Tensor,
    logits: Tensor,
    labels: Tensor,
    attention_mask: Optional[Tensor] = None,
    input_ids: Optional[Tensor] = None,
    *,
    margin: float = 0.5,
    pad_token_id: Optional[int] = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """SimCTG objective ``L_MLE + L_CL`` of ``hidden_states``, ``logits`` and ``labels``; see
    :class:`SimCTG`."""
    eng = engine_args(chunk_size, backend)
    check_embeddings("logits", logits, ndim=3)
    check_embeddings("hidden_states", hidden_states, ndim=3)
    if logits.shape[:2] != hidden_states.shape[:2]:
        raise ValueError(
            f"logits {tuple(logits.shape)} and hidden_states {tuple(hidden_states.shape)} must "
            "share (B, T)"
        )
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise ValueError(f"ignore_index must be an integer, got {ignore_index!r}")
    check_index(
        "labels",
        labels,
        logits.shape[-1],
        shape=logits.shape[:2],
        allow=(ignore_index,),
        ref=logits,
        what="vocabulary ids",
    )
    Bn, T = labels.shape
    ce = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=ignore_index,
        reduction="none",
    ).reshape(Bn, T)
    n_tokens = max(int((labels != ignore_index).sum()), 1)
    mle = ce.sum(dim=1) * (Bn / n_tokens)
    cl = _contrastive_rows(
        hidden_states, attention_mask, input_ids, pad_token_id, margin, eng, chunk_size
    )
    return reduce(mle + cl, reduction, group=None)


class SimCTGContrastive(Objective, functional=simctg_contrastive):
    """SimCTG's token-level contrastive term alone: spread the token representations of each
    sequence apart.

    For every sequence, each pair of distinct valid tokens whose cosine similarity exceeds
    ``1 - margin`` pays a hinge: the model learns an isotropic, discriminative token space,
    which makes contrastive search decoding work. The tokens of one sequence are each other's
    negatives (there are no positive pairs besides the token itself, ``s_ii = 1``). Add it to
    your own language-model loss, or use :class:`SimCTG` for ``L_MLE + L_CL``. Rank-local under
    a process group.

    ::

        h = normalize(H_b),  s_ij = <h_i, h_j>     (tokens i, j of sequence b)
        L_CL = sum_b sum_{valid i != j} max(0, rho - (s_ii - s_ij)) / #(valid ordered pairs)
        row_b = B * sum_{valid i != j} max(0, rho - 1 + s_ij) / #pairs   (mean_b row_b = L_CL)

    Args:
        margin (float, default 0.5): ``rho`` (paper and official scripts; 0 disables the term).
        pad_token_id (int or None, default None): padding id, to derive the valid tokens from
            ``input_ids`` (the official convention).
        reduction (str, default "mean"): ``"mean"`` (``L_CL``) | ``"sum"`` | ``"none"`` (per
            sequence, see ``row_b``).
        chunk_size (int or None, default None): query tokens per block of the tiled sweep.
        backend (str, default "auto"): ``"dense"`` materialises ``(B, T, T)``; otherwise the
            tiled sweep with its own backward (memory ``O(B T (d + b))``).

    Inputs:
        - ``hidden_states``: ``(B, T, d)`` float last hidden states.
        - ``attention_mask`` (optional): ``(B, T)``, non-zero = valid token.
        - ``input_ids`` (optional): ``(B, T)`` int64, valid where ``!= pad_token_id``.

    Example::

        import torch
        import contrastkit as ck

        h = torch.randn(2, 6, 16)
        mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
        loss = ck.SimCTGContrastive(margin=0.5)(h, mask)

    See also:
        :class:`SimCTG` (with the language-model cross-entropy).

    References:
        Su et al., "A Contrastive Framework for Neural Text Generation", NeurIPS 2022,
        arXiv:2202.06417 (yxuansu/SimCTG).
    """


class SimCTG(Objective, functional=simctg):
    """SimCTG: language-model cross-entropy plus the token-level contrastive term.

    The training objective of SimCTG: the usual next-token cross-entropy ``L_MLE`` plus
    ``L_CL`` (:class:`SimCTGContrastive`), a hinge that pushes apart the representations of
    distinct tokens of the same sequence. Labels are used as given (shift them yourself),
    ``ignore_index`` tokens are skipped as in ``torch.nn.CrossEntropyLoss``. Decoding with
    contrastive search is in Hugging Face transformers (``model.generate(...,
    penalty_alpha=0.6, top_k=4)``). Rank-local under a process group.

    ::

        L_MLE = sum_{b, t : y_bt != ignore} -log softmax(logits_bt)[y_bt] / #tokens
        L_CL = sum_b sum_{valid i != j} relu(rho - 1 + <h_i, h_j>) / #pairs   (h normalised)
        L = L_MLE + L_CL;  row_b = B * (CE_b / #tokens + hinge_b / #pairs), mean_b row_b = L

    Args:
        margin (float, default 0.5): ``rho`` (0 disables ``L_CL``).
        pad_token_id (int or None, default None): padding id for ``input_ids``.
        ignore_index (int, default -100): label id skipped by the cross-entropy.
        reduction (str, default "mean"): ``"mean"`` (``L``) | ``"sum"`` | ``"none"`` (per
            sequence, ``row_b``).
        chunk_size (int or None, default None), backend (str, default "auto"): as
            :class:`SimCTGContrastive`.

    Inputs:
        - ``hidden_states``: ``(B, T, d)`` float last hidden states.
        - ``logits``: ``(B, T, V)`` float next-token logits.
        - ``labels``: ``(B, T)`` int64 target ids (``ignore_index`` allowed).
        - ``attention_mask`` (optional): ``(B, T)``, non-zero = valid token.
        - ``input_ids`` (optional): ``(B, T)`` int64, valid where ``!= pad_token_id``.

    Example::

        import torch
        import contrastkit as ck

        h, logits = torch.randn(2, 6, 16), torch.randn(2, 6, 50)
        labels = torch.randint(0, 50, (2, 6))
        loss = ck.SimCTG(margin=0.5)(h, logits, labels)

    See also:
        :class:`SimCTGContrastive` (the contrastive term alone).

    References:
        Su et al., "A Contrastive Framework for Neural Text Generation", NeurIPS 2022,
        arXiv:2202.06417 (yxuansu/SimCTG).
    """


#: the names published before the naming rule
simctg_loss = simctg
SimCTGLoss = SimCTG
