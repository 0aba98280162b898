"""SwAV: swapped prediction with Sinkhorn-Knopp codes (Caron et al., "Unsupervised Learning of
Visual Features by Contrasting Cluster Assignments", NeurIPS 2020, arXiv 2006.09882).

Embeddings of ``V`` crops are stacked crop-major ``(V B, d)``; prototype scores are
``p = z W^T`` with ``W (K, d)`` unit rows. For every assignment crop ``a`` the codes are
``q_a = Sinkhorn([queue_a W^T ; p_a])[-B:]`` (no gradient) and::

    loss = 1/|A| sum_{a in A} 1/(V - 1) sum_{v != a} mean_b CE(q_a,b, softmax(p_v,b / tau))
    CE(q, p) = -sum_k q_k log p_k

Sinkhorn (facebookresearch/swav ``distributed_sinkhorn``, world size 1): ``Q = exp(out / eps)^T``
(K x B'), ``Q /= sum Q``, then ``n_iter`` times {rows / row sums / K; columns / column sums / B'};
``Q *= B'``, so each sample's code sums to 1 and each prototype gets mass about ``B'/K``. The
normalisations run in log space (``log Q -= logsumexp``), in fp32 or wider: the official
``exp(out / eps)`` overflows or underflows to empty rows (NaN codes) at small ``eps`` or large
scores, while the log-space iterates are the same numbers without that failure.

Engine: not used. The loss is a soft-target cross-entropy over ``K`` prototypes (``B x K``
scores, K ~ 3000 is small and the scores are the model's output layer anyway), and the Sinkhorn
targets couple every row and column of the batch.

Exactness: exact under a process group, as the official ``distributed_sinkhorn``. Each rank
holds its batch's columns of ``Q`` (and its own queue, as the official per-GPU queue); the total
and the per-prototype (row) normalisers are log-sum-exps over every rank's columns (each rank's
``K`` partial log-sum-exps are all-gathered and combined), the per-sample (column) normalisers
are local, and ``B'`` counts every rank's columns. The codes, the loss (mean over the global
batch) and the prototypes' gradient are those of one process on the concatenated batch and
queues.

Defaults as ``main_swav.py``: tau 0.1, epsilon 0.05, 3 iterations, crops_for_assign (0, 1).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._validation import check_embeddings, check_positive, check_reduction, check_temperature
from ...objective import (
    EPS,
    exact_objective,
    gather_rows,
    global_rows,
    objective_group,
    prepare,
    reduce,
    replicated,
)

__all__ = ["sinkhorn_knopp", "swav", "SwAV"]


def _check_iterations(n_iters) -> None:
    if not isinstance(n_iters, int) or isinstance(n_iters, bool) or n_iters < 1:
        raise ValueError(f"sinkhorn_iterations must be an integer >= 1, got {n_iters!r}")


def _logsumexp_across(x: Tensor, group) -> Tensor:
    """``log sum_r exp(x_r)`` elementwise over the ranks of ``group`` (``x`` locally): every
    rank's partial log-sum-exps are gathered (``W x numel`` floats) and combined in one order, so
    every rank gets the same numbers."""
    if group is None:
        return x
    every = gather_rows(x.reshape(1, -1), "partial log-sum-exps", group=group)
    return torch.logsumexp(every, dim=0).reshape(x.shape)


@exact_objective
@torch.no_grad()
def sinkhorn_knopp(scores: Tensor, epsilon: float = 0.05, n_iters: int = 3) -> Tensor:
    """Codes ``(B', K)`` from scores ``(B', K)``: each row sums to 1, columns about ``B'/K``.

    Sinkhorn-Knopp on ``Q = exp(scores / epsilon)^T`` (Cuturi 2013, arXiv 1306.0895; SwAV,
    arXiv 2006.09882): ``Q /= sum Q``, then ``n_iters`` times rows ``/= K * row sums`` and
    columns ``/= B' * column sums``; returns ``B' Q^T``.

    Args:
        scores: ``(B', K)`` sample-prototype scores (any float dtype).
        epsilon: entropic regularisation (0.05 in SwAV); small values give sharp codes.
        n_iters: normalisation rounds (3 in SwAV).

    Computed in log space in fp32 (fp64 stays fp64), without gradient, so that a small
    ``epsilon`` or large scores give sharp codes rather than NaN (``exp(scores / epsilon)``
    leaves all-zero rows in any precision); the codes are fp32 for fp16/bf16 scores.

    Example::

        q = sinkhorn_knopp(z @ prototypes.T, epsilon=0.05)   # (B, K), rows sum to 1

    Under a process group each rank passes its own rows and gets their codes; the sums run over
    every rank's rows (``B'`` is the global count), as SwAV's ``distributed_sinkhorn``.
    """
    check_embeddings("scores", scores)
    check_positive("epsilon", epsilon)
    _check_iterations(n_iters)
    return _sinkhorn(scores, epsilon, n_iters, objective_group())


def _sinkhorn(scores: Tensor, epsilon: float, n_iters: int, group) -> Tensor:
    x = scores.detach()
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    logQ = (x / epsilon).t()  # K x B' (this rank's columns)
    K = logQ.shape[0]
    B = global_rows(logQ.shape[1], group=group)
    logQ = logQ - _logsumexp_across(torch.logsumexp(logQ.reshape(-1), dim=0), group)
    log_k, log_b = math.log(K), math.log(B)
    for _ in range(n_iters):
        rows = _logsumexp_across(torch.logsumexp(logQ, dim=1, keepdim=True), group)
        logQ = logQ - (rows + log_k)
        logQ = logQ - (torch.logsumexp(logQ, dim=0, keepdim=True) + log_b)
    return torch.exp(logQ + log_b).t()


def _check_crops(n_crops, crops_for_assign) -> tuple[int, tuple[int, ...]]:
    if not isinstance(n_crops, int) or isinstance(n_crops, bool) or n_crops < 2:
        raise ValueError(f"n_crops must be an integer >= 2 (crops per sample), got {n_crops!r}")
    cfa = tuple(crops_for_assign)
    if (
        not cfa
        or len(set(cfa)) != len(cfa)
        or any(not isinstance(c, int) or c < 0 or c >= n_crops for c in cfa)
    ):
        raise ValueError(
            f"crops_for_assign must be distinct crop ids in [0, {n_crops}), "
            f"got {crops_for_assign!r}"
        )
    return n_crops, cfa


@exact_objective
def swav(
    embeddings: Tensor,
    prototypes: Tensor,
    queue: Optional[Tensor] = None,
    *,
    n_crops: int = 2,
    crops_for_assign: Sequence[int] = (0, 1),
    temperature: float = 0.1,
    epsilon: float = 0.05,
    sinkhorn_iterations: int = 3,
    reduction: str = "mean",
    normalize: bool = True,
) -> Tensor:
    """SwAV loss of crop-major ``embeddings`` against ``prototypes`` (optional ``queue`` of past
    embeddings); see :class:`SwAV`."""
    n_crops, cfa = _check_crops(n_crops, crops_for_assign)
    check_embeddings("embeddings", embeddings)
    check_embeddings("prototypes", prototypes)
    check_temperature("temperature", temperature)
    check_positive("epsilon", epsilon)
    _check_iterations(sinkhorn_iterations)
    if prototypes.shape[1] != embeddings.shape[1]:
        raise ValueError(
            f"prototypes has feature dimension {prototypes.shape[1]} (shape "
            f"{tuple(prototypes.shape)}) but embeddings has {embeddings.shape[1]}"
        )
    if embeddings.shape[0] % n_crops:
        raise ValueError(
            f"embeddings rows ({embeddings.shape[0]}) must be n_crops ({n_crops}) times the batch"
        )
    B = embeddings.shape[0] // n_crops
    if queue is not None:
        if (
            not isinstance(queue, Tensor)
            or queue.dim() != 3
            or queue.shape[0] != len(cfa)
            or (queue.shape[2] != embeddings.shape[1])
        ):
            raise ValueError(
                f"queue must have shape ({len(cfa)}, Q, {embeddings.shape[1]}), got "
                f"{tuple(queue.shape) if isinstance(queue, Tensor) else type(queue).__name__}"
            )
    group = objective_group()
    z = prepare(embeddings, normalize)  # fp16/bf16 are computed in fp32
    W = replicated(prototypes.to(z.dtype), group=group)
    scores = z @ W.t()  # (V B, K)
    log_p = [
        F.log_softmax(scores[v * B : (v + 1) * B] / temperature, dim=1) for v in range(n_crops)
    ]
    rows = scores.new_zeros(B)  # per-sample terms
    for i, a in enumerate(cfa):
        out = scores[a * B : (a + 1) * B].detach()
        if queue is not None:
            out = torch.cat([queue[i].to(z.dtype) @ W.detach().t(), out])
        with torch.no_grad():
            q = _sinkhorn(out, epsilon, sinkhorn_iterations, group)[-B:].to(z.dtype)
        sub = sum(-(q * log_p[v]).sum(dim=1) for v in range(n_crops) if v != a)
        rows = rows + sub / (n_crops - 1)
    return reduce(rows / len(cfa), reduction, group=group)


class SwAV(torch.nn.Module):
    """SwAV: swapped prediction of online cluster codes, with its prototypes and optional queue.

    Each sample is seen as ``n_crops`` crops, stacked crop-major. Every crop is scored against
    ``K`` learnable unit prototypes; for each assignment crop the Sinkhorn-Knopp algorithm turns
    the batch's scores into balanced soft codes (no gradient), and every *other* crop of the same
    sample must predict those codes with a softmax over the prototypes. The module owns the
    prototypes (re-normalised in place before each forward, as the official training loop) and
    the optional queue of past embeddings that stabilises Sinkhorn at small batch sizes. The
    functional :func:`swav` takes the prototypes (and queue) as inputs. Exact under a process
    group: the Sinkhorn sums run over every rank's batch (and queue), as SwAV's
    ``distributed_sinkhorn``; each rank keeps a queue of its own embeddings.

    ::

        p_v = z_v W^T                                   (crop v, W: (K, d) unit prototypes)
        q_a = Sinkhorn([queue_a W^T ; p_a], epsilon, sinkhorn_iterations)[-B:]   (no grad)
        l_b = 1/|A| sum_{a in A} 1/(V - 1) sum_{v != a} -sum_k q_a[b, k] log softmax(p_v[b] / T)_k
        loss = mean_b l_b        (A = crops_for_assign, V = n_crops, T = temperature)

    Args:
        dim (int): embedding dimension ``d``.
        n_prototypes (int, default 3000): number of prototypes ``K`` (paper: 3000).
        n_crops (int, default 2): crops per sample (2 + 6 with multi-crop).
        crops_for_assign (sequence of int, default (0, 1)): crops whose codes are targets (the
            full-resolution ones).
        temperature (float, default 0.1): softmax temperature ``T`` (divides the scores).
        epsilon (float, default 0.05): entropic regularisation of Sinkhorn (smaller: sharper).
        sinkhorn_iterations (int, default 3): Sinkhorn normalisation rounds.
        queue_length (int, default 0): 0 (no queue) or a multiple of the batch size (3840 at
            batch 256). The queue holds past detached embeddings of every assignment crop,
            newest first; it is used once full, and from then on always. Call
            :meth:`reset_queue` to start it at a later epoch (``epoch_queue_starts``).
        reduction (str, default "mean"): ``"mean"`` | ``"sum"`` | ``"none"`` (per sample ``l_b``).
        normalize (bool, default True): L2-normalise the embeddings first.

    Freezing the prototypes for the first iterations (``freeze_prototypes_niters``) is done by the
    training loop: set ``prototypes.grad = None`` before the optimiser step.

    Inputs:
        - ``embeddings``: ``(n_crops * B, d)`` float, crop-major (rows ``v*B .. (v+1)*B - 1`` are
          crop ``v``); the crops of one sample are its positives, there are no explicit
          negatives (the equipartition of the codes prevents collapse).

    Example::

        import torch
        import contrastkit as ck

        swav = ck.SwAV(dim=16, n_prototypes=10, temperature=0.1)
        z = torch.randn(2 * 8, 16)        # 2 crops of 8 samples, crop-major
        loss = swav(z)

    See also:
        :func:`sinkhorn_knopp` (the codes), :class:`MLCD` (fixed cluster centres).

    References:
        Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster
        Assignments", NeurIPS 2020, arXiv:2006.09882 (facebookresearch/swav).
        Cuturi, "Sinkhorn Distances", NeurIPS 2013, arXiv:1306.0895.
    """

    def __init__(
        self,
        dim: int,
        n_prototypes: int = 3000,
        *,
        n_crops: int = 2,
        crops_for_assign: Sequence[int] = (0, 1),
        temperature: float = 0.1,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        queue_length: int = 0,
        reduction: str = "mean",
        normalize: bool = True,
    ):
        super().__init__()
        for name, v in (("dim", dim), ("n_prototypes", n_prototypes)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        self.n_crops, self.crops_for_assign = _check_crops(n_crops, crops_for_assign)
        check_temperature("temperature", temperature)
        check_positive("epsilon", epsilon)
        _check_iterations(sinkhorn_iterations)
        self.temperature, self.epsilon = temperature, epsilon
        check_reduction(reduction)
        self.sinkhorn_iterations, self.normalize = sinkhorn_iterations, normalize
        self.reduction = reduction
        layer = torch.nn.Linear(dim, n_prototypes, bias=False)  # nn.Linear init, as the paper
        self.prototypes = torch.nn.Parameter(layer.weight.detach().clone())
        self.register_buffer("queue", None)
        self.register_buffer("queue_in_use", torch.tensor(False))
        self.reset_queue(queue_length)

    def reset_queue(self, queue_length: int) -> None:
        """(Re)allocate an empty queue of ``queue_length`` rows per assignment crop (0: none)."""
        if not isinstance(queue_length, int) or isinstance(queue_length, bool) or queue_length < 0:
            raise ValueError(f"queue_length must be an integer >= 0, got {queue_length!r}")
        p = self.prototypes
        self.queue = (
            torch.zeros(
                len(self.crops_for_assign), queue_length, p.shape[1], dtype=p.dtype, device=p.device
            )
            if queue_length
            else None
        )
        self.queue_in_use = torch.tensor(False, device=p.device)

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """Re-normalise the prototypes to unit rows in place (done before each forward)."""
        self.prototypes.copy_(F.normalize(self.prototypes, dim=1, eps=EPS))

    def forward(self, embeddings: Tensor) -> Tensor:
        self.normalize_prototypes()
        check_embeddings("embeddings", embeddings)
        if embeddings.shape[0] % self.n_crops:
            raise ValueError(
                f"embeddings rows ({embeddings.shape[0]}) must be n_crops ({self.n_crops}) "
                "times the batch"
            )
        B = embeddings.shape[0] // self.n_crops
        queue = None
        if self.queue is not None:
            Q = self.queue.shape[1]
            if Q % B:
                raise ValueError(f"queue_length ({Q}) must be a multiple of the batch size ({B})")
            if not bool(self.queue_in_use) and not bool(torch.all(self.queue[0, -1] == 0)):
                self.queue_in_use = torch.tensor(True, device=self.queue.device)
            if bool(self.queue_in_use):
                queue = self.queue.clone()
        loss = swav(
            embeddings,
            self.prototypes,
            queue,
            n_crops=self.n_crops,
            crops_for_assign=self.crops_for_assign,
            temperature=self.temperature,
            epsilon=self.epsilon,
            sinkhorn_iterations=self.sinkhorn_iterations,
            reduction=self.reduction,
            normalize=self.normalize,
        )
        if self.queue is not None:
            with torch.no_grad():
                z = embeddings.detach().to(self.queue.dtype)
                z = F.normalize(z, dim=-1, eps=EPS) if self.normalize else z
                for i, a in enumerate(self.crops_for_assign):
                    self.queue[i, B:] = self.queue[i, :-B].clone()
                    self.queue[i, :B] = z[a * B : (a + 1) * B]
        return loss

    def extra_repr(self) -> str:
        q = 0 if self.queue is None else self.queue.shape[1]
        return (
            f"n_prototypes={self.prototypes.shape[0]}, dim={self.prototypes.shape[1]}, "
            f"n_crops={self.n_crops}, crops_for_assign={self.crops_for_assign}, "
            f"temperature={self.temperature}, epsilon={self.epsilon}, queue_length={q}, "
            f"reduction={self.reduction!r}"
        )
