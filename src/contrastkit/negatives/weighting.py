"""Structure-aware negative weights: clusters (MEOW, AdaMEOW) and communities (gCooL, CSGCL).

Hard weights become the engine's per-tile negative weights (:class:`ClusterNegativeWeights`,
:class:`CommunityNegativeWeights` have ``tile(r0, r1, c0, c1)``; pass them as ``weights=`` to
:func:`contrastkit.negatives.info_nce_with_negatives`): nothing ``N x N`` is stored, only labels.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import (
    check_compatible,
    check_embeddings,
    check_index,
    check_labels,
    check_reduction,
    check_temperature,
    check_tensor,
)
from ..engine import LSETerm, PairMask, RowSpec
from ..losses._common import engine_args, kappa, partner_logits, row_weight, run, two_views

__all__ = [
    "ClusterNegativeWeights",
    "meow_cluster_labels",
    "AdaMEOWWeights",
    "adameow_info_nce",
    "community_centroids",
    "community_weights",
    "CommunityNegativeWeights",
    "community_contrast",
    "community_strength",
    "team_up_gamma",
    "team_up_loss",
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
    from sklearn.cluster import KMeans

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


def adameow_info_nce(
    a: Tensor,
    z: Tensor,
    weights: Tensor,
    *,
    temperature=1.0,
    normalize_weights: bool = False,
    reduction: str = "mean",
) -> Tensor:
    """``l_i = -u_ii + log sum_j w_ij exp(u_ij)``, ``u = cos(a_i, z_j) / tau`` (diagonal weighted
    too), with learned ``weights`` (N, N) from :class:`AdaMEOWWeights` (tau 1.0 on ACM, else 0.9).

    Dense autograd rather than the engine: the weights are learned, so their gradient is needed,
    and the engine's weights carry none. ``normalize_weights`` rescales rows to mean 1 (a guard
    against weights shrinking to 0; not in the official code).
    """
    check_reduction(reduction)
    check_temperature("temperature", temperature)
    check_embeddings("a", a)
    check_embeddings("z", z)
    check_compatible("a", a, "z", z, same_rows=True)
    N = a.shape[0]
    check_tensor("weights", weights, kind="float", shape=(N, N), ref=a)
    if bool((weights < 0).any()):
        raise ValueError("weights must be >= 0 (their log enters the denominator)")
    if normalize_weights:
        weights = weights / weights.mean(1, keepdim=True)
    u = F.normalize(a, dim=-1) @ F.normalize(z, dim=-1).T / temperature
    rows = torch.logsumexp(u + torch.log(weights), dim=1) - u.diagonal()
    if reduction == "none":
        return rows
    return rows.mean() if reduction == "mean" else rows.sum()


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


def community_contrast(
    h1: Tensor,
    h2: Tensor,
    assignment1: Tensor,
    assignment2: Tensor,
    n_communities: int,
    *,
    temperature: float = 0.2,
    mode: str = "cosine",
    gamma: float = 2e-5,
) -> Tensor:
    """gCooL's node <-> community cross-contrast ``L_com = mean_i (L12_i + L21_i) / 2``::

        L12_i = -log( e(h1_i, C2[c]) / (e(h1_i, C2[c]) + sum_{c' != c} w(c, c') e(h1_i, C2[c'])) )

    with ``c = assignment2[i]``, centroids ``C_v`` of each view (detached). ``mode="cosine"``:
    ``e = exp(h.C / tau)``, ``w = 1`` (the official run); ``mode="rbf"``: ``e = exp(-||h - C||^2
    / tau^2)``, ``w = exp(-gamma ||C_c - C_c'||^2)`` (ReSC). O(N C d): no engine needed.
    """
    if mode not in ("cosine", "rbf"):
        raise ValueError(f"mode must be 'cosine' or 'rbf', got {mode!r}")
    check_temperature("temperature", temperature)
    check_embeddings("h1", h1)
    check_embeddings("h2", h2)
    check_compatible("h1", h1, "h2", h2, same_rows=True)
    for name, a in (("assignment1", assignment1), ("assignment2", assignment2)):
        check_index(name, a, n_communities, shape=(h1.shape[0],), ref=h1, what="communities")

    def one_side(h, assign_other, C_other):
        if mode == "cosine":
            logit = h @ C_other.T / temperature
            logw = torch.zeros(n_communities, n_communities, dtype=h.dtype, device=h.device)
        else:
            logit = -torch.cdist(h, C_other).pow(2) / temperature**2
            logw = -gamma * torch.cdist(C_other, C_other).pow(2)
        logit_w = logit + logw[assign_other]  # w(c, c') exp(.)
        pos = logit.gather(1, assign_other[:, None]).squeeze(1)
        return torch.logsumexp(logit_w, dim=1) - pos  # w(c, c) = 1 keeps the positive

    C1 = community_centroids(h1, assignment1, n_communities)
    C2 = community_centroids(h2, assignment2, n_communities)
    return ((one_side(h1, assignment2, C2) + one_side(h2, assignment1, C1)) / 2).mean()


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


def team_up_loss(
    h1: Tensor,
    h2: Tensor,
    strength: Tensor,
    gamma: float,
    *,
    temperature: float = 0.2,
    reduction: str = "mean",
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """CSGCL team-up contrast: GRACE's loss on ``s'_ij = cos(h_i, h_j) + gamma (cs_i + cs_j)``.

    Anchors are both views' nodes (2N), candidates every other node of both views, positive the
    same node in the other view; mean over 2N. On the engine: ``gamma cs_j / tau`` becomes the
    column weight ``exp(gamma cs_j / tau)``, and ``gamma cs_i / tau`` a row shift. ``strength`` is
    the node strength ``cs[communities]`` (N,). ``gamma = 0`` is GRACE (= NT-Xent).
    """
    eng = engine_args(chunk_size, backend)
    check_temperature("temperature", temperature)
    Z, partner = two_views(h1, h2, normalize=True, names=("h1", "h2"), min_rows=1)
    N = h1.shape[0]
    check_tensor("strength", strength, kind="float", shape=(N,), ref=h1)
    cs = torch.cat([strength, strength]).to(Z.dtype).detach()
    k = kappa(Z, temperature)
    shift = gamma * cs / temperature
    col_w = torch.exp(shift - shift.max())  # weights up to a constant factor, added back below
    w = row_weight(reduction, 2 * N)
    spec = RowSpec(
        terms=(
            LSETerm(
                exclude=PairMask(self_offset=0),
                weights=lambda r0, r1, c0, c1: col_w[None, c0:c1].expand(r1 - r0, c1 - c0),
            ),
        ),
        row_fn=lambda st, sd: w * (st["lse"][0] + sd["const"] - sd["pos"] - sd["shift"]),
        row_side={
            "pos": partner_logits(Z, k),
            "shift": shift,
            "const": shift.max().expand(2 * N),
        },
    )
    return run(Z, Z, spec, k, reduction, eng)
