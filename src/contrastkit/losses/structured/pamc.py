"""PamC: proxy approximated meta-node contrastive loss (Kulatilleke, Portmann, Chandra,
"Efficient block contrastive learning via parameter-free meta-node approximation", 2022,
arXiv 2209.14067; gayanku/PAMC ``train.py`` ``NcontrastCCSP``, ``get_feature_dis``).

Node embeddings ``z (n, d)``, soft cluster assignments ``q (n, K)`` and the graph operator
``A^r`` (r-th power of the row-normalised ``A + I`` of a kNN graph; :func:`adjacency_power`)::

    cos_ij = cosine(z_i, z_j), with cos_ii = 0
    x_pos_i = sum_j A^r_ij exp(cos_ij / T)                     (over the non-zeros of A^r)
    c_k = sum_{i : argmax q_i = k} z_i                          (meta-nodes; assignment detached)
    x_neg_k = sum_l exp(cosine(c_k, c_l) / T), with cosine(c_k, c_k) = 0
    L = -mean_i log(x_pos_i + 1e-10) + mean_k log(x_neg_k + 1e-10)

The official code multiplies the cosine by ``tau`` (1.0); here it is divided by
``temperature = 1 / tau`` (1.0, the same default). Empty clusters give NaN in the
official code; here they are dropped from the meta-nodes. fp16/bf16 inputs are computed in
fp32 and the sums of exponentials in log space, so a small temperature does not overflow. The
training objective is ``alpha L + beta KL(P || Q)`` (alpha 2, beta 0.1; the clustering KL is
not part of this loss).

Engine: not used, by design of the method: positives are the sparse graph neighbours
(O(nnz d)) and negatives are K x K meta-nodes, so the loss is linear in the number of nodes with
no N x N term at all.

Exactness: rank-local. The meta-nodes are cluster sums over this rank's nodes.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

from ..._validation import check_embeddings, check_temperature
from ...engine import compute_dtype
from ...objective import Objective, rank_local_objective, reduce

__all__ = ["adjacency_power", "pamc", "PamC"]

_EPS = 1e-10


def adjacency_power(adj: Tensor, order: int = 2) -> Tensor:
    """``adj ** order`` by sparse products (sparse COO result; dense input is made sparse)."""
    if not isinstance(order, int) or isinstance(order, bool) or order < 1:
        raise ValueError(f"order must be a positive integer, got {order!r}")
    if not isinstance(adj, Tensor) or adj.dim() != 2 or adj.shape[0] != adj.shape[1]:
        raise ValueError(
            f"adj must be a square (n, n) matrix, got {tuple(getattr(adj, 'shape', ()))}"
        )
    a = adj.to_sparse() if not adj.is_sparse else adj
    out = a
    with warnings.catch_warnings():  # torch notes sparse support is beta on every product
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(order - 1):
            out = torch.sparse.mm(out, a)
    return out.coalesce()


@rank_local_objective
def pamc(
    z: Tensor,
    q: Tensor,
    adjacency: Tensor,
    *,
    temperature: float = 1.0,
    reduction: str = "mean",
) -> Tensor:
    """PamC loss of node embeddings ``z``, soft assignments ``q`` and the graph operator
    ``adjacency``; see :class:`PamC`."""
    check_embeddings("z", z)
    check_embeddings("q", q)
    check_temperature("temperature", temperature)
    inv_t = 1.0 / temperature
    n = z.shape[0]
    if q.shape[0] != n:
        raise ValueError(f"q must have a row per node ({n}), got shape {tuple(q.shape)}")
    if not isinstance(adjacency, Tensor) or tuple(adjacency.shape) != (n, n):
        raise ValueError(
            f"adjacency must have shape ({n}, {n}), got {tuple(getattr(adjacency, 'shape', ()))}"
        )
    if adjacency.is_complex() or adjacency.dtype == torch.bool:
        raise ValueError(f"adjacency must hold real weights, got dtype {adjacency.dtype}")
    A = (adjacency if adjacency.is_sparse else adjacency.to_sparse()).coalesce()
    edge, val = A.indices(), A.values().to(z.dtype)
    if not bool(torch.isfinite(val).all()):
        bad = int((~torch.isfinite(val)).sum())
        raise ValueError(f"adjacency contains {bad} NaN or Inf values")
    if bool((val < 0).any()):
        raise ValueError("adjacency must have non-negative values")
    zero = z.detach().norm(dim=-1) == 0
    if bool(zero.any()):  # the cosine of a zero row is undefined (NaN in the official code)
        raise ValueError(
            f"z has {int(zero.sum())} all-zero rows (e.g. row {int(zero.nonzero()[0])}); "
            "their cosine similarity is undefined"
        )
    # fp16/bf16 are computed in fp32; the sums of exponentials are taken in log space (shifted
    # by their maxima), so a small temperature cannot overflow: log(x + 1e-10) is
    # logaddexp(log x, log 1e-10), the same number without the overflow.
    z = z.to(compute_dtype(z.dtype))
    val = val.to(z.dtype)
    zn = z / z.norm(dim=-1, keepdim=True)
    src, dst = edge[0], edge[1]
    cos = (zn[src] * zn[dst]).sum(-1)
    cos = torch.where(src == dst, torch.zeros_like(cos), cos)
    logit = inv_t * cos + torch.log(val)  # log(A_ij exp(cos_ij / T)); -inf for a zero weight
    peak = torch.full((n,), float("-inf"), dtype=z.dtype, device=z.device)
    peak = peak.scatter_reduce(0, src, logit.detach(), "amax")
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    s_pos = torch.zeros(n, dtype=z.dtype, device=z.device).index_add(
        0, src, torch.exp(logit - peak[src])
    )
    has = s_pos > 0
    lse_pos = torch.where(
        has, torch.log(torch.where(has, s_pos, torch.ones_like(s_pos))) + peak, -math.inf
    )
    # meta-nodes: sums of each (non-empty) cluster's members
    assign = q.detach().argmax(dim=1)
    used, cluster = torch.unique(assign, return_inverse=True)
    C = torch.zeros(used.numel(), z.shape[1], dtype=z.dtype, device=z.device).index_add(
        0, cluster, z
    )
    Cn = C / C.norm(dim=-1, keepdim=True)
    cc = Cn @ Cn.t()
    cc = cc - torch.diag_embed(torch.diagonal(cc))
    lse_neg = torch.logsumexp(inv_t * cc, dim=1)
    log_eps = torch.tensor(math.log(_EPS), dtype=z.dtype, device=z.device)
    rows = -torch.logaddexp(lse_pos, log_eps) + torch.logaddexp(lse_neg, log_eps).mean()
    return reduce(rows, reduction, group=None)


class PamC(Objective, functional=pamc):
    """PamC: proxy approximated meta-node contrastive loss for graph clustering.

    Positives are a node's graph neighbours (weighted by the ``r``-th power of the normalised
    adjacency, :func:`adjacency_power`); negatives are not node pairs but *meta-nodes*: the
    sums of the nodes of each (hard-assigned) cluster, contrasted with each other. The loss is
    linear in the number of nodes (sparse positives, ``K x K`` meta-node negatives). Each node's
    term is its positive term plus the shared meta-node term, so the mean over nodes is the
    paper's loss. Rank-local under a process group.

    ::

        cos_ij = cosine(z_i, z_j), cos_ii = 0
        x_pos_i = sum_j A^r_ij exp(cos_ij / T)
        c_k = sum_{i : argmax q_i = k} z_i                    (meta-nodes, assignment detached)
        x_neg_k = sum_{l != k} exp(cosine(c_k, c_l) / T)      (+ exp(0) for l = k)
        l_i = -log(x_pos_i + 1e-10) + mean_k log(x_neg_k + 1e-10)
        loss = mean_i l_i

    Args:
        temperature (float, default 1.0): ``T``; the official code's ``tau`` multiplies the
            cosine, ``temperature = 1 / tau`` (both 1.0 by default).
        reduction (str, default "mean"): ``"mean"`` | ``"sum"`` | ``"none"`` (per node).

    The training objective is ``alpha L + beta KL(P || Q)`` (alpha 2, beta 0.1); the clustering
    KL is not part of this loss.

    Inputs:
        - ``z``: ``(n, d)`` float node embeddings (no all-zero row).
        - ``q``: ``(n, K)`` float soft cluster assignments (argmax gives the meta-nodes).
        - ``adjacency``: ``(n, n)`` non-negative ``A^r`` (sparse COO or dense); its non-zeros
          are the positives, its values their weights.

    Example::

        import torch
        import contrastkit as ck
        from contrastkit.losses.structured.pamc import adjacency_power

        z, q = torch.randn(10, 8), torch.softmax(torch.randn(10, 3), 1)
        a = torch.eye(10) + torch.diag(torch.ones(9), 1)
        a = a / a.sum(1, keepdim=True)
        loss = ck.PamC(temperature=1.0)(z, q, adjacency_power(a, 2))

    See also:
        :func:`adjacency_power`, :class:`SwAV` (clusters as targets).

    References:
        Kulatilleke, Portmann, Chandra, "Efficient block contrastive learning via
        parameter-free meta-node approximation", 2022, arXiv:2209.14067 (gayanku/PAMC).
    """
