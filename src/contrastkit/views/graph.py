"""Graph views: edge dropping and feature masking (GRACE), and the LightGCL SVD view.

* Edge dropping and feature masking as in GRACE (Zhu et al., "Deep Graph Contrastive
  Representation Learning", arXiv:2006.04131): every directed edge is removed independently
  with probability ``p``; one mask over feature *columns* zeroes the same columns for every node.
* The SVD view of LightGCL (Cai et al., "LightGCL: Simple Yet Effective Graph Contrastive
  Learning for Recommendation", ICLR 2023): a rank-``q`` randomized SVD of the normalised
  user-item matrix ``A_ui / sqrt(deg_u deg_i)`` propagates embeddings globally
  (``G_u = U S (V^T E_i)``, ``G_i = V S (U^T E_u)``).

A graph is an ``edge_index (2, E)`` of integer node ids, a ``torch.sparse`` COO adjacency, or a
dense floating adjacency (edges = non-zero entries).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from ._random import check_generator, rand, seeded_global_rng

__all__ = ["drop_edges", "mask_features", "normalize_bipartite", "svd_view", "SVDView"]


def _check_p(name: str, p) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    return float(p)


def _kind(graph) -> str:
    if not isinstance(graph, Tensor):
        raise ValueError(f"graph must be a Tensor, got {type(graph).__name__}")
    if graph.layout == torch.sparse_coo:
        if graph.dim() != 2:
            raise ValueError(f"a sparse adjacency must be 2-D, got shape {tuple(graph.shape)}")
        return "sparse"
    if graph.layout != torch.strided:
        raise ValueError(f"sparse adjacencies must use the COO layout, got {graph.layout}")
    if graph.dim() == 2 and graph.shape[0] == 2 and not graph.is_floating_point():
        return "edge_index"
    if graph.dim() == 2 and graph.is_floating_point():
        return "dense"
    raise ValueError(
        "graph must be an integer edge_index of shape (2, E), a torch.sparse_coo adjacency or a "
        f"dense floating adjacency; got shape {tuple(graph.shape)} and dtype {graph.dtype}"
    )


def drop_edges(
    graph: Tensor,
    p: float,
    *,
    generator: Optional[torch.Generator] = None,
    rescale: bool = False,
    return_mask: bool = False,
):
    """Remove every (directed) edge independently with probability ``p`` (GRACE).

    ``edge_index (2, E)`` -> the kept columns; sparse COO -> the kept entries; dense -> dropped
    non-zero entries set to 0. ``rescale=True`` divides kept weights by ``1 - p`` (LightGCL's
    ``sparse_dropout``; weighted adjacencies only). ``return_mask``: also the ``(E,)`` keep mask
    over the edges (columns of ``edge_index``, entries of the coalesced sparse tensor, or the
    non-zero entries of the dense matrix in row-major order).
    """
    p = _check_p("p", p)
    check_generator(generator)
    kind = _kind(graph)
    if rescale and kind == "edge_index":
        raise ValueError("rescale=True needs edge weights: give a sparse or dense adjacency")
    if kind == "edge_index":
        keep = rand(graph.shape[1], generator, graph.device, torch.float64) >= p
        out = graph[:, keep]
    elif kind == "sparse":
        g = graph.coalesce()
        keep = rand(g.values().shape[0], generator, graph.device, torch.float64) >= p
        vals = g.values()[keep]
        if rescale and p < 1:
            vals = vals / (1 - p)
        out = torch.sparse_coo_tensor(
            g.indices()[:, keep], vals, g.shape, check_invariants=False
        ).coalesce()
    else:
        nz = graph != 0
        keep = rand(int(nz.sum()), generator, graph.device, torch.float64) >= p
        full = torch.zeros_like(nz)
        full[nz] = keep
        out = torch.where(full, graph, torch.zeros_like(graph))
        if rescale and p < 1:
            out = out / (1 - p)
    return (out, keep) if return_mask else out


def mask_features(
    x: Tensor,
    p: float,
    *,
    generator: Optional[torch.Generator] = None,
    return_mask: bool = False,
):
    """Zero whole feature columns of ``x (N, F)``, each with probability ``p`` (GRACE)."""
    p = _check_p("p", p)
    check_generator(generator)
    if not isinstance(x, Tensor) or x.dim() != 2:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a (N, F) node-feature tensor, got {got}")
    keep = rand(x.shape[1], generator, x.device, torch.float64) >= p
    out = x * keep.to(x.dtype)
    return (out, keep) if return_mask else out


def normalize_bipartite(adj: Tensor) -> Tensor:
    """``A_ui / sqrt(deg_u deg_i)`` of a user-item matrix (sparse COO or dense), degrees being
    row and column sums (LightGCL)."""
    kind = _kind(adj)
    if kind == "edge_index":
        raise ValueError("normalize_bipartite needs an (n_users, n_items) adjacency matrix")
    if kind == "sparse":
        a = adj.coalesce()
        r, c = a.indices()
        vals = a.values()
        if not vals.is_floating_point():
            vals = vals.to(torch.get_default_dtype())
        du = torch.zeros(a.shape[0], dtype=vals.dtype, device=vals.device).index_add_(0, r, vals)
        di = torch.zeros(a.shape[1], dtype=vals.dtype, device=vals.device).index_add_(0, c, vals)
        out = vals / torch.sqrt(du[r] * di[c])
        return torch.sparse_coo_tensor(a.indices(), out, a.shape, check_invariants=False).coalesce()
    du, di = adj.sum(1), adj.sum(0)
    denom = torch.sqrt(du[:, None] * di[None, :])
    return torch.where(adj != 0, adj / torch.where(denom > 0, denom, 1), torch.zeros_like(adj))


class SVDView(NamedTuple):
    """Rank-``q`` factors of the normalised adjacency: ``u (n_u, q)``, ``s (q,)``,
    ``v (n_i, q)``, ``us = u diag(s)``, ``vs = v diag(s)``."""

    u: Tensor
    s: Tensor
    v: Tensor
    us: Tensor
    vs: Tensor

    def propagate(self, e_u: Tensor, e_i: Tensor) -> tuple[Tensor, Tensor]:
        """One SVD-view layer: ``G_u = U S (V^T E_i)``, ``G_i = V S (U^T E_u)``."""
        if e_u.shape[0] != self.u.shape[0] or e_i.shape[0] != self.v.shape[0]:
            raise ValueError(
                f"e_u must have {self.u.shape[0]} rows and e_i {self.v.shape[0]}, got "
                f"{tuple(e_u.shape)} and {tuple(e_i.shape)}"
            )
        return self.us @ (self.v.T @ e_i), self.vs @ (self.u.T @ e_u)

    def reconstruct(self) -> Tensor:
        """The rank-``q`` approximation ``U S V^T`` (dense)."""
        return self.us @ self.v.T


def svd_view(
    adj: Tensor,
    q: int = 5,
    *,
    niter: int = 2,
    normalize: bool = True,
    generator: Optional[torch.Generator] = None,
) -> SVDView:
    """LightGCL's SVD view: ``torch.svd_lowrank`` (``niter`` power iterations, default 2) of the
    normalised (``normalize=True``) user-item matrix, computed once before training. ``q = 5`` is
    LightGCL's default. ``generator`` seeds the randomized SVD."""
    check_generator(generator)
    if isinstance(q, bool) or not isinstance(q, int) or q < 1:
        raise ValueError(f"q must be a positive integer, got {q!r}")
    a = normalize_bipartite(adj) if normalize else adj
    if _kind(a) == "edge_index":
        raise ValueError("svd_view needs an (n_users, n_items) adjacency matrix")
    if q > min(a.shape):
        raise ValueError(f"q={q} exceeds min(n_users, n_items) = {min(a.shape)}")
    if not a.is_floating_point():
        raise ValueError(f"adj must be floating point, got {a.dtype}")
    devices = [a.device] if a.device.type == "cuda" else []
    with seeded_global_rng(generator, devices):
        u, s, v = torch.svd_lowrank(a, q=q, niter=niter)
    return SVDView(u, s, v, u * s[None, :], v * s[None, :])
