"""PamC: proxy approximated meta-node contrastive loss (Kulatilleke, Portmann, Chandra,
"Efficient block contrastive learning via parameter-free meta-node approximation", 2022,
arXiv 2209.14067; gayanku/PAMC ``train.py`` ``NcontrastCCSP``, ``get_feature_dis``).

Node embeddings ``z (n, d)``, soft cluster assignments ``q (n, K)`` and the graph operator
``A^r`` (r-th power of the row-normalised ``A + I`` of a kNN graph; :func:`adjacency_power`)::

    cos_ij = cosine(z_i, z_j), with cos_ii = 0
    x_pos_i = sum_j A^r_ij exp(tau cos_ij)                     (over the non-zeros of A^r)
    c_k = sum_{i : argmax q_i = k} z_i                          (meta-nodes; assignment detached)
    x_neg_k = sum_l exp(tau cosine(c_k, c_l)), with cosine(c_k, c_k) = 0
    L = -mean_i log(x_pos_i + 1e-10) + mean_k log(x_neg_k + 1e-10)

``tau`` multiplies the cosine (inverse temperature, 1.0). Empty clusters give NaN in the
official code; here they are dropped from the meta-nodes. The training objective is
``alpha L + beta KL(P || Q)`` (alpha 2, beta 0.1; the clustering KL is not part of this loss).

Engine: not used, by design of the method: positives are the sparse graph neighbours
(O(nnz d)) and negatives are K x K meta-nodes, so the loss is linear in the number of nodes with
no N x N term at all.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .._validation import check_embeddings, check_temperature

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


def pamc(z: Tensor, q: Tensor, adjacency: Tensor, *, tau: float = 1.0) -> Tensor:
    """PamC loss of ``z (n, d)``, assignments ``q (n, K)`` and ``adjacency`` (n, n) = A^r
    (sparse COO or dense; its values weigh the positives)."""
    check_embeddings("z", z)
    check_embeddings("q", q)
    check_temperature("tau", tau)
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
    zn = z / z.norm(dim=-1, keepdim=True)
    src, dst = edge[0], edge[1]
    cos = (zn[src] * zn[dst]).sum(-1)
    cos = torch.where(src == dst, torch.zeros_like(cos), cos)
    x_pos = torch.zeros(n, dtype=z.dtype, device=z.device).index_add(
        0, src, val * torch.exp(tau * cos)
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
    x_neg = torch.exp(tau * cc).sum(1)
    return -torch.log(x_pos + _EPS).mean() + torch.log(x_neg + _EPS).mean()


class PamC(torch.nn.Module):
    """PamC module: ``forward(z, q, adjacency)``; tau 1.0 as the paper."""

    def __init__(self, tau: float = 1.0):
        super().__init__()
        check_temperature("tau", tau)
        self.tau = tau

    def forward(self, z: Tensor, q: Tensor, adjacency: Tensor) -> Tensor:
        return pamc(z, q, adjacency, tau=self.tau)

    def extra_repr(self) -> str:
        return f"tau={self.tau}"
