"""UniME's InfoNCE over mined hard negatives (Gu et al. 2025, arXiv:2504.17432)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._validation import check_index, check_temperature
from ...negatives.mining import _indices
from ...objective import Objective, rank_local_objective, reduce
from .info_nce import check_query_key

__all__ = ["mined_info_nce", "MinedInfoNCE"]


@rank_local_objective
def mined_info_nce(
    query: Tensor,
    key: Tensor,
    mined,
    *,
    temperature=0.02,
    reduction: str = "mean",
    normalize: bool = True,
) -> Tensor:
    """UniME's loss on ``[s_ii, s_i,n_1, ..., s_i,n_k] / tau``; see :class:`MinedInfoNCE`."""
    N, _ = check_query_key(query, key)
    idx = _indices(mined)
    check_index("mined", idx, key.shape[0], ndim=2, rows=N, allow=(-1,), ref=query, what="keys")
    # a (N,) temperature is one per query; any other shape would broadcast over the columns
    check_temperature("temperature", temperature, N)
    q = F.normalize(query, dim=-1) if normalize else query
    k = F.normalize(key, dim=-1) if normalize else key
    valid = idx >= 0
    neg = k[idx.clamp(min=0)]
    logits = torch.cat([(q * k[:N]).sum(-1, keepdim=True), torch.einsum("nd,nkd->nk", q, neg)], 1)
    t = temperature
    logits = logits / (t[:, None] if isinstance(t, Tensor) and t.dim() == 1 else t)
    logits[:, 1:] = logits[:, 1:].masked_fill(~valid, float("-inf"))
    rows = torch.logsumexp(logits, dim=1) - logits[:, 0]
    return reduce(rows, reduction, group=None)


class MinedInfoNCE(Objective, functional=mined_info_nce):
    """UniME's InfoNCE over mined hard negatives: each query's softmax holds its positive key and
    its k mined negatives only (no in-batch negatives).

    ``mined`` comes from :class:`contrastkit.negatives.TopKMiner` (a ``MinedNegatives`` or an
    (N, k) index tensor into ``key``); ``-1`` slots (a miner's shortage) are masked out. Only
    O(N k d) work per call (k logits per row), so it needs no engine. With every key mined
    (an infinite margin) it equals :class:`InfoNCE`. Rank-local: the indices address this
    rank's keys; under a process group it raises unless the caller asks for a per-rank loss
    with ``contrastkit.distributed.local()``.

    Formula::

        s_ij = cos(q_i, k_j)
        l_i  = -log softmax([s_ii, s_i,n_1, ..., s_i,n_k] / tau)_0      (n = mined[i], valid)
        loss = mean_i l_i

    Args:
        temperature (float | Tensor, default 0.02): tau (UniME); a number, a 0-dim tensor or
            one per query ``(N,)``.
        reduction (str, default "mean"): ``"mean"`` | ``"sum"`` | ``"none"`` (one per query).
        normalize (bool, default True): L2-normalise ``query`` and ``key``.

    Inputs:
        - ``query``: (N, d) float.
        - ``key``: (M, d) float, M >= N; key ``i`` is query ``i``'s positive.
        - ``mined``: a ``MinedNegatives`` or an (N, k) long tensor of key indices (the
          negatives), ``-1`` for an empty slot.
        - returns a scalar, or (N,) with ``reduction="none"``.

    Example::

        import torch
        import contrastkit as ck
        from contrastkit.negatives import TopKMiner

        q, k = torch.randn(8, 16), torch.randn(8, 16)
        mined = TopKMiner(3)(q, k)
        loss = ck.MinedInfoNCE(temperature=0.02)(q, k, mined)

    See also:
        :class:`InfoNCE` (``negatives=gather_negatives(key, mined)`` adds the in-batch keys),
        :class:`InfoNCEWithNegatives` (mined negatives with a validity mask beside the batch).

    References:
        Gu et al., "Breaking the Modality Barrier: Universal Embedding Learning with Multimodal
        LLMs" (UniME), arXiv:2504.17432.
    """
