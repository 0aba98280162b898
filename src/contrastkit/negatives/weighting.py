"""Structure-aware negative weights: clusters (MEOW, AdaMEOW) and communities (gCooL, CSGCL).

Hard weights become the engine's per-tile negative weights (:class:`ClusterNegativeWeights`,
:class:`CommunityNegativeWeights` have ``tile(r0, r1, c0, c1)``; pass them as ``weights=`` to
:func:`contrastkit.losses.info_nce_with_negatives`): nothing ``N x N`` is stored, only labels.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .._extras import require
from .._validation import (
    check_compatible,
    check_embeddings,
    check_index,
    check_labels,
    check_tensor,
)

__all__ = [
    "ClusterNegativeWeights",
    "meow_cluster_labels",
    "AdaMEOWWeights",
    "community_centroids",
    "community_weights",
    "CommunityNegativeWeights",
    "community_strength",
    "team_up_gamma",
]


def _long_labels(name: str, labels, n: Optional[int] = None) -> Tensor:
    check_tensor(name, labels, ndim=(1, 2), kind="int")
    if labels.shape[-1] == 0:
        raise ValueError(f"{name} must label at least one row, got shape {tuple(labels.shape)}")
    labels = labels if labels.dim() == 2 else labels[None]
    if n is not None and labels.shape[1] != n:
        raise ValueError(f"{name} must have {n} columns, got shape {tuple(labels.shape)}")
    return labels


class ClusterNegativeWeights:
    """MEOW hard negative weights (Yu & Li, "Heterogeneous Graph Contrastive Learning with
    Meta-path Contexts and Weighted Negative Samples", SDM 2023)::

        w_ij = G - #{g : cluster_g(i) = cluster_g(j)}      (an integer in [0, G])

    over ``G`` clusterings ``labels`` (G, N) of the anchors and ``key_labels`` (G, M) of the keys
    (default: the same, a symmetric N x N weighting whose diagonal is 0, so the positive leaves the
    denominator). Evaluated per tile (``tile``) or densely (``dense``).
    """

    def __init__(self, labels: Tensor, key_labels: Optional[Tensor] = None):
        self.labels = _long_labels("labels", labels)
        self.key_labels = (
            self.labels if key_labels is None else _long_labels("key_labels", key_labels)
        )
        if self.key_labels.shape[0] != self.labels.shape[0]:
            raise ValueError(
                f"labels and key_labels need the same number of clusterings: "
                f"{tuple(self.labels.shape)} vs {tuple(self.key_labels.shape)}"
            )

    @property
    def shape(self):
        return (self.labels.shape[1], self.key_labels.shape[1])

    def tile(self, r0: int, r1: int, c0: int, c1: int) -> Tensor:
        same = self.labels[:, r0:r1, None] == self.key_labels[:, None, c0:c1]
        return (self.labels.shape[0] - same.sum(0)).float()

    def dense(self) -> Tensor:
        return self.tile(0, self.shape[0], 0, self.shape[1])


def meow_cluster_labels(
    features: Tensor,
    n_clusters: Sequence[int] = (100, 300),
    *,
    n_init: int = 5,
    max_iter: int = 20,
) -> Tensor:
    """Cluster labels (G, N) of L2-normalised ``features`` at each granularity (MEOW step 1).

    scikit-learn k-means (``n_init=5``, ``max_iter=20``, ``random_state`` = granularity index,
    as the official seeds). MEOW clusters with a FAISS inner-product index; on unit vectors
    Euclidean k-means differs only in that centroids are not re-normalised during assignment.
    """
    KMeans = require("sklearn.cluster", "metrics", "meow_cluster_labels").KMeans

    check_embeddings("features", features)
    x = F.normalize(features.detach().double(), dim=-1).cpu().numpy()
    out = []
    for g, c in enumerate(n_clusters):
        if not isinstance(c, int) or not 1 <= c <= x.shape[0]:
            raise ValueError(
                f"n_clusters entries must be integers in [1, N={x.shape[0]}], got {c!r}"
            )
        km = KMeans(n_clusters=c, n_init=n_init, max_iter=max_iter, random_state=g)
        out.append(torch.as_tensor(km.fit_predict(x), dtype=torch.long))
    return torch.stack(out).to(features.device)


class AdaMEOWWeights(torch.nn.Module):
    """AdaMEOW learned soft weights (TKDE 2024 version of MEOW)::

        w_ij = sigmoid( MLP(a_i + z_j) ),   MLP = Linear(p, 16) -> tanh -> Linear(16, 1)

    ``forward(a, z)`` -> (N, M) weights with gradient into the MLP, in row blocks of
    ``chunk_size`` (the pairwise input is (b, M, p)).
    """

    def __init__(self, dim: int, hidden: int = 16, chunk_size: int = 256):
        super().__init__()
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(dim, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 1)
        )
        self.chunk_size = chunk_size

    def forward(self, a: Tensor, z: Tensor) -> Tensor:
        check_embeddings("a", a)
        check_embeddings("z", z)
        check_compatible("a", a, "z", z)
        rows = [
            torch.sigmoid(self.mlp(a[r0 : r0 + self.chunk_size, None] + z[None])).squeeze(-1)
            for r0 in range(0, a.shape[0], self.chunk_size)
        ]
        return torch.cat(rows)


# ---------------------------------------------------------------- gCooL (communities, ReSC)


def community_centroids(h: Tensor, assignment: Tensor, n_communities: int) -> Tensor:
    """Detached community means ``C[c] = mean{h_i : assignment_i = c}`` (zero when empty)."""
    check_embeddings("h", h)
    check_labels("assignment", assignment, h.shape[0], h)
    if int(assignment.min()) < 0 or int(assignment.max()) >= n_communities:
        raise ValueError(f"assignment must lie in [0, n_communities={n_communities})")
    hd = h.detach()
    sums = hd.new_zeros(n_communities, h.shape[1]).index_add_(0, assignment, hd)
    counts = torch.bincount(assignment, minlength=n_communities).to(hd.dtype)
    return sums / counts.clamp(min=1)[:, None]


def community_weights(centroids: Tensor, gamma: float) -> Tensor:
    """ReSC weights of gCooL (Li, Jing, Tong, "Graph Communal Contrastive Learning", WWW 2022):
    ``w(a, b) = exp(-gamma ||C_a - C_b||^2)`` (C, C), symmetric with unit diagonal."""
    check_embeddings("centroids", centroids)
    if not isinstance(gamma, (int, float)) or gamma < 0:
        raise ValueError(f"gamma must be a number >= 0, got {gamma!r}")
    return torch.exp(-gamma * torch.cdist(centroids, centroids).pow(2))


class CommunityNegativeWeights:
    """Node-pair weights ``w_ij = W[comm_i, comm_j]`` from a (C, C) community weight matrix,
    evaluated per tile (pass as ``weights=`` to ``info_nce_with_negatives``)."""

    def __init__(self, community_matrix: Tensor, row_communities: Tensor, col_communities=None):
        check_tensor("community_matrix", community_matrix, ndim=2, kind="float")
        C = community_matrix.shape[0]
        if community_matrix.shape != (C, C):
            raise ValueError(
                f"community_matrix must be square (C, C), got {tuple(community_matrix.shape)}"
            )
        if bool((community_matrix < 0).any()):
            raise ValueError("community_matrix must hold weights >= 0")
        self.W = community_matrix.detach()
        self.rows = row_communities
        self.cols = row_communities if col_communities is None else col_communities
        for name, v in (("row_communities", self.rows), ("col_communities", self.cols)):
            check_index(name, v, C, ndim=1, ref=community_matrix, what="communities")

    @property
    def shape(self):
        return (self.rows.shape[0], self.cols.shape[0])

    def tile(self, r0: int, r1: int, c0: int, c1: int) -> Tensor:
        return self.W[self.rows[r0:r1, None], self.cols[None, c0:c1]]

    def dense(self) -> Tensor:
        return self.tile(0, self.shape[0], 0, self.shape[1])


# ------------------------------------------------------------------- CSGCL (team-up strength)


def community_strength(
    edge_index: Tensor,
    communities: Tensor,
    edge_weight: Optional[Tensor] = None,
    n_communities: Optional[int] = None,
) -> Tensor:
    """Community strength of CSGCL (Chen et al., IJCAI 2023), each community's modularity term::

        cs_c = inc_c / L - (deg_c / (2 L))^2

    ``edge_index`` (2, E) lists each undirected edge once (self-loops count once), ``L`` = total
    edge weight, ``inc_c`` = weight inside ``c``, ``deg_c`` = total degree of ``c``'s nodes.
    Returns (C,); node strengths are ``cs[communities]``. ``cs.sum()`` is the modularity.
    """
    check_index("communities", communities, n_communities, ndim=1, what="communities")
    check_tensor("edge_index", edge_index, ndim=2, kind="int")
    if edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
    check_index("edge_index", edge_index, communities.shape[0], what="nodes")
    C = int(communities.max()) + 1 if n_communities is None else n_communities
    E = edge_index.shape[1]
    w = torch.ones(E, dtype=torch.float64) if edge_weight is None else edge_weight.double()
    if w.shape != (E,):
        raise ValueError(f"edge_weight must have shape ({E},), got {tuple(w.shape)}")
    L = w.sum()
    if L <= 0:
        raise ValueError("the graph has no edges (total edge weight 0)")
    cu, cv = communities[edge_index[0]], communities[edge_index[1]]
    inc = torch.zeros(C, dtype=torch.float64).index_add_(0, cu[cu == cv], w[cu == cv])
    deg = torch.zeros(C, dtype=torch.float64).index_add_(0, cu, w).index_add_(0, cv, w)
    return inc / L - (deg / (2 * L)) ** 2


def team_up_gamma(epoch: int, t0: int = 0, gamma_max: float = 1.0) -> float:
    """CSGCL schedule ``gamma_t = min(max(0, (epoch - t0) / 100), gamma_max)``."""
    return min(max(0.0, (epoch - t0) / 100.0), gamma_max)
