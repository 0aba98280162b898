"""BECLR's memory and inference alignment (Poulakakis-Daktylidis & Jamali-Rad, "BECLR: Batch
Enhanced Contrastive Few-Shot Learning", ICLR 2024, arXiv:2402.02444;
checked against the official ``stypoumic/BECLR`` code:
``dyce.py``, ``utils/sinkhorn.py``, ``utils/optimal_transport.py``, ``evaluate.py``).

* :class:`DynamicClusteredMemory` (DyCE): a FIFO memory partitioned into ``P`` equal-sized
  clusters by a Sinkhorn-Knopp equipartition; each batch is enlarged with the ``k`` nearest memory
  vectors from every sample's nearest cluster (extra positives).
* :func:`optimal_transport_align` (OpTA): at inference, moves the support prototypes of an
  episode towards the query distribution by entropic optimal transport.

Neither is a row-wise objective, so neither runs on the engine: DyCE is a stateful batch builder
(``O(2B (S + P) d)`` per step) and OpTA a small ``n_way x n_query`` transport problem.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._extras import require
from .._validation import check_embeddings, check_labels
from .queue import _check_size

__all__ = [
    "DynamicClusteredMemory",
    "sinkhorn_equipartition",
    "optimal_transport_align",
    "OpTAResult",
]


# ------------------------------------------------------------------------------------- Sinkhorn


@torch.no_grad()
def sinkhorn_equipartition(
    scores: Tensor, epsilon: float = 0.05, iterations: int = 10, *, stable: bool = True
) -> Tensor:
    """Sinkhorn-Knopp equipartition of ``n`` samples over ``P`` clusters (SwAV / BECLR).

    ``Q = exp(scores / eps)`` normalised to total 1, then ``iterations`` rounds of {each cluster's
    mass -> 1/P; each sample's mass -> 1/n}; returned times ``n`` as ``(n, P)``: rows sum to 1,
    columns to ``n / P``. If the result has NaNs (under/overflow), ``eps`` grows by 0.1 and the
    computation is repeated (BECLR's guard). ``stable=True`` subtracts the maximum score before
    the exponential (the official code does not, so with ``eps = 1e-5`` it overflows and the
    guard ends near ``eps = 0.1``; ``stable=False`` reproduces that).
    """
    check_embeddings("scores", scores)
    if not (isinstance(epsilon, (int, float)) and epsilon > 0):
        raise ValueError(f"epsilon must be > 0, got {epsilon!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be a non-negative integer, got {iterations!r}")
    n, p = scores.shape
    eps = float(epsilon)
    s = scores - scores.max() if stable else scores
    for _ in range(1000):
        q = torch.exp(s / eps).T  # (P, n)
        q = q / q.sum()
        if not bool(torch.isnan(q).any()):
            for _ in range(iterations):
                q = q / q.sum(dim=1, keepdim=True) / p
                q = q / q.sum(dim=0, keepdim=True) / n
            q = q * n
            if not bool(torch.isnan(q).any()) or not stable:
                return q.T
        eps += 0.1
    raise ValueError(f"sinkhorn_equipartition did not produce finite values (epsilon={epsilon})")


# ------------------------------------------------------------------------------------------ DyCE


class DynamicClusteredMemory(nn.Module):
    """DyCE: dynamic clustered memory of BECLR.

    ``forward(z, epoch)`` takes ``z (2B, d) = [view 1; view 2]`` and returns, from
    ``memory_start_epoch`` on, ``(2B (1 + k), d) = [z1; n1; z2; n2]`` where ``n_v`` holds the ``k``
    memory neighbours of each sample of view ``v`` (sample ``i``'s neighbours are rows
    ``i k .. i k + k - 1``, nearest first; detached memory rows as stored). Row ``r`` of the
    first half is the positive of row ``r`` of the second half. Before that epoch ``z`` is
    returned unchanged (the memory is still updated).

    Per call: until the memory is first full it is a FIFO (lightly's ``MemoryBankModule``: random
    unit vectors at start, overflow writes what fits and resets the pointer). When it becomes full,
    its normalised rows are clustered by k-means into ``P`` prototypes. From then on each batch is
    assigned to clusters by :func:`sinkhorn_equipartition` on the cost
    ``||normalize(z_i) - normalize(p_c)||``, written with those labels, and every prototype is
    replaced by ``(1 - memory_momentum) * mean(stored rows with its label) + memory_momentum *
    old`` (clusters without members keep theirs). Re-clustering every ``cluster_freq`` epochs
    (k-means result discarded if a cluster is empty), and whenever fewer than 2 labels remain.
    Neighbours: the top-``k`` by cosine inside the sample's nearest cluster, or over the whole
    memory when that cluster has ``<= k`` members.

    Args:
        size: memory size ``S``; BECLR uses :meth:`official_size` ``(P, scale, 2B)``.
        dim: embedding dimension.
        num_clusters: ``P`` (miniImageNet config 200).
        topk: ``k`` neighbours per sample (config 5).
        memory_start_epoch: first epoch that enlarges the batch (config 60).
        cluster_freq, recluster: periodic re-clustering (config 60, on).
        epsilon, sinkhorn_iterations: Sinkhorn regularisation and rounds (argparse 0.05; 10).
        memory_momentum: prototype EMA ``mu`` (config 0.0).
        normalize_cost: cost on L2-normalised vectors (official ``eucl_norm=True``).
        exclude_self: drop the current batch's own two views from a sample's neighbours (the
            official code may return them, since the batch is written before the search).
        official_quirks: reproduce the official code where it differs from the paper: (a) Sinkhorn
            on ``+cost`` (prefers *far* prototypes) without max-shift; (b) view 2 falls back to
            the global search only with ``< k`` members; (c) in-cluster neighbours are taken as
            ``bank[j]`` with ``j`` the rank position *inside the cluster's member list* (an
            indexing slip in ``dyce.py``: ``index_select(bank, 0, topk(sim_to_members).indices)``).
        kmeans_n_init, seed: scikit-learn k-means restarts (10) and random state; ``seed`` also
            draws the random initial memory.
    """

    def __init__(
        self,
        size: int,
        dim: int,
        num_clusters: int = 200,
        *,
        topk: int = 5,
        memory_start_epoch: int = 60,
        cluster_freq: int = 60,
        recluster: bool = True,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 10,
        memory_momentum: float = 0.0,
        normalize_cost: bool = True,
        exclude_self: bool = False,
        official_quirks: bool = False,
        kmeans_n_init: int = 10,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        device=None,
    ):
        super().__init__()
        self.size = _check_size("size", size)
        self.dim = _check_size("dim", dim)
        self.num_clusters = _check_size("num_clusters", num_clusters)
        self.topk = _check_size("topk", topk)
        _check_size("cluster_freq", cluster_freq)
        _check_size("sinkhorn_iterations", sinkhorn_iterations)
        _check_size("kmeans_n_init", kmeans_n_init)
        if num_clusters > size:
            raise ValueError(f"num_clusters={num_clusters} must not exceed size={size}")
        if topk + (2 if exclude_self else 0) > size:
            raise ValueError(f"topk={topk} needs a larger memory than size={size}")
        if not (isinstance(epsilon, (int, float)) and epsilon > 0):
            raise ValueError(f"epsilon must be > 0, got {epsilon!r}")
        if not (0.0 <= float(memory_momentum) <= 1.0):
            raise ValueError(f"memory_momentum must be in [0, 1], got {memory_momentum}")
        self.memory_start_epoch = int(memory_start_epoch)
        self.cluster_freq = cluster_freq
        self.recluster = bool(recluster)
        self.epsilon = float(epsilon)
        self.sinkhorn_iterations = sinkhorn_iterations
        self.memory_momentum = float(memory_momentum)
        self.normalize_cost = bool(normalize_cost)
        self.exclude_self = bool(exclude_self)
        self.official_quirks = bool(official_quirks)
        self.kmeans_n_init = kmeans_n_init
        self.seed = int(seed)
        g = torch.Generator().manual_seed(self.seed)
        bank = F.normalize(torch.randn(size, dim, generator=g, dtype=torch.float64), dim=1)
        self.register_buffer("bank", bank.to(dtype=dtype, device=device))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long, device=device))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long, device=device))
        self.register_buffer(
            "prototypes", torch.zeros(num_clusters, dim, dtype=dtype, device=device)
        )
        self.register_buffer("clustered", torch.zeros((), dtype=torch.bool, device=device))
        self.register_buffer("last_cluster_epoch", torch.zeros((), dtype=torch.long, device=device))

    @staticmethod
    def official_size(num_clusters: int, scale: int, batch_rows: int) -> int:
        """BECLR's memory size ``(scale * P // (2B) + 1) * 2B + 1`` (``batch_rows = 2B``)."""
        return (scale * num_clusters // batch_rows + 1) * batch_rows + 1

    # ------------------------------------------------------------------------- state updates
    @torch.no_grad()
    def cluster(self, epoch: int = 0) -> bool:
        """k-means of the normalised memory into ``P`` clusters; sets prototypes and labels.
        Returns False (state kept) when re-clustering produced an empty cluster."""
        require("sklearn", "metrics", "DynamicClusteredMemory (k-means)")
        from sklearn.cluster import KMeans

        x = F.normalize(self.bank.double(), dim=1).cpu().numpy()
        km = KMeans(n_clusters=self.num_clusters, n_init=self.kmeans_n_init, random_state=self.seed)
        lab = km.fit_predict(x)
        if bool(self.clustered) and len(np.unique(lab)) < self.num_clusters:
            return False
        self.prototypes.copy_(torch.from_numpy(km.cluster_centers_))
        self.labels.copy_(torch.from_numpy(lab.astype(np.int64)))
        self.clustered.fill_(True)
        self.last_cluster_epoch.fill_(epoch)
        return True

    def _write(self, z: Tensor, labels: Optional[Tensor]) -> Tensor:
        """FIFO write with BECLR's overflow (write what fits, pointer to 0); returns slots."""
        p, n = int(self.ptr), z.shape[0]
        m = min(n, self.size - p)
        slots = torch.arange(p, p + m, device=self.bank.device)
        self.bank[slots] = z[:m].detach().to(self.bank.dtype)
        if labels is not None:
            self.labels[slots] = labels[:m]
        self.ptr.fill_(0 if p + n >= self.size else p + n)
        return slots

    def _assign_and_write(self, z: Tensor) -> Tensor:
        protos = self.prototypes.to(z.dtype)
        if self.normalize_cost:
            cost = torch.cdist(F.normalize(z, dim=1), F.normalize(protos, dim=1))
        else:
            cost = torch.cdist(z, protos)
        q = sinkhorn_equipartition(
            cost if self.official_quirks else -cost,
            self.epsilon,
            self.sinkhorn_iterations,
            stable=not self.official_quirks,
        )
        slots = self._write(z, q.argmax(dim=1))
        # prototypes: mean of all stored rows per label; empty clusters keep theirs
        P = self.num_clusters
        sums = torch.zeros(P, self.dim, dtype=self.bank.dtype, device=self.bank.device)
        sums.index_add_(0, self.labels, self.bank)
        counts = torch.bincount(self.labels, minlength=P).to(self.bank.dtype)
        new = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], self.prototypes)
        mu = self.memory_momentum
        self.prototypes.copy_((1 - mu) * new + mu * self.prototypes)
        return slots

    # ---------------------------------------------------------------------------- forward
    def forward(self, z: Tensor, epoch: int) -> Tensor:
        check_embeddings("z", z)
        if z.shape[1] != self.dim:
            raise ValueError(f"z must have dimension dim={self.dim}, got {tuple(z.shape)}")
        n = z.shape[0]
        if n % 2:
            raise ValueError(f"z must stack two views [view1; view2] (2B rows), got {n} rows")
        if n > self.size:
            raise ValueError(f"z has {n} rows, more than the memory size={self.size}")
        if z.device != self.bank.device:
            raise ValueError(f"z is on {z.device} but the memory is on {self.bank.device}")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        with torch.no_grad():
            zd = z.detach()
            if not bool(self.clustered):
                if int(self.ptr) + n >= self.size:  # memory full for the first time
                    self.cluster(epoch)
                    slots = self._assign_and_write(zd)
                    bank, clustered = self.bank.clone(), True
                else:
                    bank, clustered = self.bank.clone(), False
                    slots = torch.empty(0, dtype=torch.long, device=z.device)
                    self._write(zd, None)  # the search uses the snapshot before the write
            else:
                due = epoch % self.cluster_freq == 0 and epoch != int(self.last_cluster_epoch)
                if self.recluster and due:
                    self.cluster(epoch)
                if len(torch.unique(self.labels)) <= 1:
                    self.cluster(epoch)
                slots = self._assign_and_write(zd)
                bank, clustered = self.bank.clone(), True
            if epoch < self.memory_start_epoch:
                return z
            B = n // 2
            own = torch.full((B, 2), -1, dtype=torch.long, device=z.device)
            if self.exclude_self and slots.numel():
                rows = torch.arange(slots.numel(), device=z.device)
                own[rows % B, rows // B] = slots
            idx = [
                self._neighbours(zd[v * B : (v + 1) * B], bank, clustered, own, v) for v in (0, 1)
            ]
        k, d = self.topk, self.dim
        nb = [bank[i].reshape(B * k, d).to(z.dtype) for i in idx]
        return torch.cat([z[:B], nb[0], z[B:], nb[1]])

    def _neighbours(self, zv: Tensor, bank: Tensor, clustered: bool, own: Tensor, view: int):
        k = self.topk
        zn, bn = F.normalize(zv, dim=1), F.normalize(bank.to(zv.dtype), dim=1)
        sim = zn @ bn.T  # (B, S)
        excl = torch.zeros_like(sim, dtype=torch.bool)
        for c in range(2):
            ok = own[:, c] >= 0
            excl[ok.nonzero().squeeze(1), own[ok, c]] = True
        sim = sim.masked_fill(excl, float("-inf"))
        if not clustered:
            return sim.topk(k, dim=1).indices
        pn = F.normalize(self.prototypes.to(zv.dtype), dim=1)
        nearest = (zn @ pn.T).argmax(dim=1)
        member = (self.labels[None, :] == nearest[:, None]) & ~excl
        count = member.sum(dim=1)
        small = count < k if (self.official_quirks and view == 1) else count <= k
        inside = sim.masked_fill(~member, float("-inf"))
        idx = torch.where(small[:, None], sim, inside).topk(k, dim=1).indices
        if self.official_quirks:
            local = member.long().cumsum(dim=1) - 1  # position within the member list
            idx = torch.where(small[:, None], idx, local.gather(1, idx))
        return idx


# ------------------------------------------------------------------------------------------ OpTA


class OpTAResult(NamedTuple):
    """``prototypes (n_way, d)`` (transported), ``query (n_q, d)`` (standardised when asked),
    ``classes (n_way,)`` (label of each prototype row, sorted) and the last pass's transport
    ``plan (n_way, n_q)``."""

    prototypes: Tensor
    query: Tensor
    classes: Tensor
    plan: Tensor


def _log_sinkhorn(cost: Tensor, epsilon: float, max_iter: int, tol: float) -> Tensor:
    """Uniform-marginal entropic OT plan, log-domain updates as in BECLR's ``Sinkhorn``."""
    n, m = cost.shape
    log_a = torch.log(torch.full((n,), 1.0 / n, dtype=cost.dtype, device=cost.device) + 1e-8)
    log_b = torch.log(torch.full((m,), 1.0 / m, dtype=cost.dtype, device=cost.device) + 1e-8)
    u = torch.zeros(n, dtype=cost.dtype, device=cost.device)
    v = torch.zeros(m, dtype=cost.dtype, device=cost.device)

    def M(u, v):
        return (-cost + u[:, None] + v[None, :]) / epsilon

    for _ in range(max_iter):
        u_prev = u
        u = epsilon * (log_a - torch.logsumexp(M(u, v), dim=1)) + u
        v = epsilon * (log_b - torch.logsumexp(M(u, v), dim=0)) + v
        if float((u - u_prev).abs().sum()) < tol:
            break
    return torch.exp(M(u, v))


def optimal_transport_align(
    support: Tensor,
    support_labels: Tensor,
    query: Tensor,
    *,
    epsilon: float = 0.05,
    n_passes: Optional[int] = None,
    ratio: Optional[float] = None,
    max_iter: int = 1000,
    tol: float = 1e-4,
    standardize: bool = True,
) -> OpTAResult:
    """OpTA (BECLR): transport the class prototypes of an episode towards its queries.

    1. (``standardize``) every feature vector ``f <- (f - mean(f)) / std(f)`` over its own ``d``
       entries (unbiased std), support and query alike;
    2. prototypes ``P_c`` = mean support feature of class ``c`` (classes sorted);
    3. ``n_passes`` times: cost ``C_ij = ||P_i - q_j||^2 / max C``, entropic OT with uniform
       marginals (log-domain Sinkhorn, ``epsilon``, at most ``max_iter`` rounds, stop when
       ``sum |u - u_prev| < tol``), plan ``pi``; ``P <- (pi / rowsum(pi)) q``;
    4. ``P <- ratio P + (1 - ratio) P_original``.

    Defaults as ``evaluate.py``: 1-shot (every class one support sample) 5 passes and
    ``ratio = 1``; otherwise 1 pass and ``ratio = 0.7``; ``epsilon = 0.05``. Inference only
    (runs under ``torch.no_grad``). Classify ``result.query`` against ``result.prototypes``.
    """
    check_embeddings("support", support)
    check_embeddings("query", query)
    if query.shape[1] != support.shape[1]:
        raise ValueError(
            f"query has feature dimension {query.shape[1]} but support has {support.shape[1]}: "
            f"{tuple(query.shape)} vs {tuple(support.shape)}"
        )
    check_labels("support_labels", support_labels, support.shape[0], support)
    if not (isinstance(epsilon, (int, float)) and epsilon > 0):
        raise ValueError(f"epsilon must be > 0, got {epsilon!r}")
    _check_size("max_iter", max_iter)
    if n_passes is not None:
        _check_size("n_passes", n_passes)
    if ratio is not None and not (0.0 <= float(ratio) <= 1.0):
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    if standardize and support.shape[1] < 2:
        raise ValueError("standardize=True needs at least 2 features per vector")
    with torch.no_grad():
        s, q = support.detach(), query.detach()
        if standardize:
            s = (s - s.mean(1, keepdim=True)) / s.std(1, keepdim=True)
            q = (q - q.mean(1, keepdim=True)) / q.std(1, keepdim=True)
            if not (bool(torch.isfinite(s).all()) and bool(torch.isfinite(q).all())):
                raise ValueError("a support or query vector is constant: cannot standardize")
        classes, inverse, counts = torch.unique(
            support_labels, sorted=True, return_inverse=True, return_counts=True
        )
        protos0 = torch.zeros(len(classes), s.shape[1], dtype=s.dtype, device=s.device)
        protos0.index_add_(0, inverse, s)
        protos0 = protos0 / counts[:, None].to(s.dtype)
        one_shot = bool((counts == 1).all())
        passes = n_passes if n_passes is not None else (5 if one_shot else 1)
        r = float(ratio) if ratio is not None else (1.0 if one_shot else 0.7)
        protos, plan = protos0, None
        for _ in range(passes):
            cost = ((protos[:, None, :] - q[None, :, :]) ** 2).sum(-1)
            top = cost.max()
            if not bool(top > 0):
                raise ValueError("every prototype coincides with every query: the cost is zero")
            plan = _log_sinkhorn(cost / top, float(epsilon), max_iter, tol)
            protos = (plan / plan.sum(1, keepdim=True)) @ q
        protos = r * protos + (1 - r) * protos0
    return OpTAResult(protos, q, classes, plan)
