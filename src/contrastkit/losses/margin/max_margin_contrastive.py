"""Token-level max-margin contrastive loss of ExplagraphGen (Saha et al., ACL 2022): O(B T V)
elementwise terms from the decoder logits, one per token (exact under a process group: a
per-token mean)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..._validation import check_index, check_reduction, check_tensor
from ...objective import Objective, exact_objective, objective_group, reduce
from ._common import _number

__all__ = ["max_margin_contrastive", "MaxMarginContrastive"]


@exact_objective
def max_margin_contrastive(
    logits: Tensor,
    positive: Tensor,
    negative: Tensor,
    *,
    margin: float = 1.0,
    alpha: float = 1.0,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Token-level max-margin loss of decoder ``logits`` for a positive and a negative target;
    see :class:`MaxMarginContrastive`."""
    group = objective_group()
    check_reduction(reduction)
    margin, alpha = _number("margin", margin), _number("alpha", alpha)
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise ValueError(f"ignore_index must be an integer, got {ignore_index!r}")
    # an empty batch or sequence would average over nothing (NaN): at least one row and step
    if not isinstance(logits, Tensor) or logits.dim() != 3 or not logits.is_floating_point():
        raise ValueError(
            f"logits must be a floating tensor (B, T, V), got "
            f"{tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__}"
        )
    check_tensor("logits", logits)  # at least one row, finite
    if logits.shape[1] == 0 or logits.shape[2] == 0:
        raise ValueError(f"logits must have T >= 1 steps and V >= 1 classes, got {logits.shape}")
    V = logits.shape[2]
    for name, ids in (("positive", positive), ("negative", negative)):
        check_index(name, ids, V, ndim=2, allow=(ignore_index,), ref=logits, what="vocabulary ids")
        if ids.shape[0] != logits.shape[0]:
            raise ValueError(
                f"{name} has batch size {ids.shape[0]} but logits {tuple(logits.shape)}"
            )
        if ids.shape[1] == 0:
            raise ValueError(f"{name} must have at least one token, got {tuple(ids.shape)}")
    if positive.shape[1] != logits.shape[1]:
        raise ValueError(
            f"logits {tuple(logits.shape)} must be the decoder outputs for positive "
            f"{tuple(positive.shape)} (same length)"
        )
    B, L = logits.shape[0], min(positive.shape[1], negative.shape[1])
    flat = logits[:, :L].reshape(-1, V)
    pos = F.cross_entropy(
        flat, positive[:, :L].reshape(-1), ignore_index=ignore_index, reduction="none"
    )
    neg = F.cross_entropy(
        flat, negative[:, :L].reshape(-1), ignore_index=ignore_index, reduction="none"
    )
    rows = (alpha * F.relu(margin + pos - neg)).reshape(B, L)
    return reduce(rows, reduction, count=rows.numel(), group=group)


class MaxMarginContrastive(Objective, functional=max_margin_contrastive):
    """Token-level max-margin contrastive loss for sequence generation: at every step the
    decoder must assign the positive target's token a negative log-likelihood lower than the
    negative target's token by at least ``margin``.

    ExplagraphGen adds it to the MLE loss of the positive target, with a negative target built
    by corrupting the positive (an explanation graph with a wrong edge). The logits are the
    decoder outputs for the positive target; both targets are truncated to the shorter length
    ``L = min(T, T')``. ``ignore_index`` positions (padding) have NLL 0 and still count in the
    mean (as the official code). With ``nll(y_bt)`` the token cross-entropy of ``logits[b, t]``::

        l_bt = alpha max(0, margin + nll(positive_bt) - nll(negative_bt))
        loss = mean_{b, t < L} l_bt

    Exact under a ``torch.distributed`` process group (the mean over the global batch of
    tokens; every rank must pass the same lengths).

    Args:
        margin (float): the margin, default 1.0 (the official code). A Python number >= 0.
        alpha (float): the weight of the loss, default 1.0. A Python number >= 0.
        ignore_index (int): the padding id of the targets (the tokenizer's pad id), default
            -100 (as ``torch.nn.CrossEntropyLoss``).
        reduction (str): ``"mean"`` over the ``B x L`` tokens (default), ``"sum"`` or
            ``"none"`` (``(B, L)``, the token terms).

    Inputs:
        ============  =============  =============================================
        input         shape          meaning
        ============  =============  =============================================
        ``logits``    ``(B, T, V)``  float decoder outputs for the positive target
        ``positive``  ``(B, T)``     integer token ids of the positive target
        ``negative``  ``(B, T')``    integer token ids of the negative target
        ============  =============  =============================================

    Example::

        import torch
        import contrastkit as ck

        logits = torch.randn(2, 5, 11)
        positive, negative = torch.randint(0, 11, (2, 5)), torch.randint(0, 11, (2, 4))
        loss = ck.MaxMarginContrastive(margin=1.0)(logits, positive, negative)

    See also:
        :class:`PairMarginContrastive` (the margin on embedding distances),
        :class:`TripletMargin`.

    References:
        Saha, Yadav, Bansal, "Explanation Graph Generation via Pre-trained Language Models: An
        Empirical Study with Contrastive Learning", ACL 2022, arXiv:2204.04813 (official code:
        github.com/swarnaHub/ExplagraphGen).
    """
