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

Computation: the loss is a sum over (sequence, token) rows of an elementwise hinge over the
same sequence's tokens, i.e. B block-diagonal ``T x T`` problems. The shared engine's elementwise
term is SigLIP's softplus over every candidate (no pair masks), so SimCTG uses its own exact
tiled sweep over query-token blocks: forward sums the hinge per block; backward recomputes the
block's similarities, ``dL/dh_i = 2/#pairs sum_j 1[s_ij > 1 - rho] m_ij h_j`` (the pair set is
symmetric). Memory ``O(B T (d + b))`` instead of ``O(B T^2)``; ``backend="dense"`` materialises
``(B, T, T)`` with autograd.

Decoding: contrastive search is in Hugging Face transformers,
``model.generate(..., penalty_alpha=0.6, top_k=4)`` (see docs); it is not re-implemented here.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import check_embeddings, check_index
from ._common import EPS, engine_args

__all__ = ["simctg_contrastive", "simctg_loss", "SimCTGLoss"]

#: elements per (B, b, T) block of the tiled sweep
_BLOCK_ELEMS = 1 << 22
#: auto uses the dense path up to this many (B T T) similarities
_DENSE_MAX = 1 << 20


class _HingeSum(torch.autograd.Function):
    """sum_b sum_{i != j, both valid} relu(margin - 1 + <h_i, h_j>) over (B, T, d) unit rows."""

    @staticmethod
    def forward(ctx, h, valid, margin, rows):
        Bn, T, _ = h.shape
        total = h.new_zeros(())
        thr = 1.0 - margin
        for r0 in range(0, T, rows):
            r1 = min(T, r0 + rows)
            s = torch.bmm(h[:, r0:r1], h.transpose(1, 2))  # (B, b, T)
            m = valid[:, r0:r1, None] & valid[:, None, :]
            m[:, torch.arange(r1 - r0), torch.arange(r0, r1)] = False
            total = total + torch.where(m, torch.clamp(s - thr, min=0), 0.0).sum()
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
        return dh * (2 * g), None, None, None


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


def simctg_contrastive(
    hidden_states: Tensor,
    *,
    margin: float = 0.5,
    attention_mask: Optional[Tensor] = None,
    input_ids: Optional[Tensor] = None,
    pad_token_id: Optional[int] = None,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """L_CL of SimCTG for ``hidden_states (B, T, d)``; see the module docstring."""
    eng = engine_args(chunk_size, backend)
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
        return (h * 0).sum()
    Bn, T, _ = h.shape
    dense = eng["backend"] == "dense" or (
        eng["backend"] == "auto" and chunk_size is None and Bn * T * T <= _DENSE_MAX
    )
    if dense:
        s = h @ h.transpose(1, 2)
        m = valid[:, :, None] & valid[:, None, :] & ~torch.eye(T, dtype=torch.bool, device=h.device)
        return torch.where(m, F.relu(margin - 1.0 + s), 0.0).sum() / n_pairs
    rows = chunk_size or max(1, min(T, _BLOCK_ELEMS // max(1, Bn * T)))
    return _HingeSum.apply(h, valid, float(margin), rows) / n_pairs


def simctg_loss(
    hidden_states: Tensor,
    logits: Tensor,
    labels: Tensor,
    *,
    margin: float = 0.5,
    attention_mask: Optional[Tensor] = None,
    input_ids: Optional[Tensor] = None,
    pad_token_id: Optional[int] = None,
    ignore_index: int = -100,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """SimCTG objective ``L_MLE + L_CL``: ``logits (B, T, V)``, ``labels (B, T)`` as given."""
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
    mle = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=ignore_index
    )
    cl = simctg_contrastive(
        hidden_states,
        margin=margin,
        attention_mask=attention_mask,
        input_ids=input_ids,
        pad_token_id=pad_token_id,
        chunk_size=chunk_size,
        backend=backend,
    )
    return mle + cl


class SimCTGLoss(torch.nn.Module):
    """SimCTG module: ``forward(hidden_states, logits=None, labels=None, *, attention_mask=None,
    input_ids=None)``. Without logits it returns L_CL only; with them ``L_MLE + L_CL``.

    Args:
        margin: rho, 0.5 (paper and official scripts).
        pad_token_id: padding id to derive valid tokens from ``input_ids`` (official convention).
        ignore_index: label id skipped by the cross-entropy (-100).
    """

    def __init__(
        self,
        margin: float = 0.5,
        pad_token_id: Optional[int] = None,
        ignore_index: int = -100,
        chunk_size: Optional[int] = None,
        backend: str = "auto",
    ):
        super().__init__()
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin >= 0:
            raise ValueError(f"margin must be a number >= 0, got {margin!r}")
        engine_args(chunk_size, backend)
        self.margin, self.pad_token_id, self.ignore_index = margin, pad_token_id, ignore_index
        self.chunk_size, self.backend = chunk_size, backend

    def forward(
        self,
        hidden_states: Tensor,
        logits: Optional[Tensor] = None,
        labels: Optional[Tensor] = None,
        *,
        attention_mask: Optional[Tensor] = None,
        input_ids: Optional[Tensor] = None,
    ) -> Tensor:
        kw = dict(
            margin=self.margin,
            attention_mask=attention_mask,
            input_ids=input_ids,
            pad_token_id=self.pad_token_id,
            chunk_size=self.chunk_size,
            backend=self.backend,
        )
        if logits is None:
            if labels is not None:
                raise ValueError("labels were given without logits")
            return simctg_contrastive(hidden_states, **kw)
        if labels is None:
            raise ValueError("logits were given without labels")
        return simctg_loss(hidden_states, logits, labels, ignore_index=self.ignore_index, **kw)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, pad_token_id={self.pad_token_id}"
