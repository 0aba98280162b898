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
targets couple every row and column (methods card 1.5).

Defaults as ``main_swav.py``: tau 0.1, epsilon 0.05, 3 iterations, crops_for_assign (0, 1).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import check_embeddings, check_positive, check_temperature
from ._common import EPS, prepare

__all__ = ["sinkhorn_knopp", "swav", "SwAV"]


def _check_iterations(n_iters) -> None:
    if not isinstance(n_iters, int) or isinstance(n_iters, bool) or n_iters < 1:
        raise ValueError(f"sinkhorn_iterations must be an integer >= 1, got {n_iters!r}")


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
    """
    check_embeddings("scores", scores)
    check_positive("epsilon", epsilon)
    _check_iterations(n_iters)
    x = scores.detach()
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    logQ = (x / epsilon).t()  # K x B'
    K, B = logQ.shape
    logQ = logQ - torch.logsumexp(logQ.reshape(-1), dim=0)
    log_k, log_b = math.log(K), math.log(B)
    for _ in range(n_iters):
        logQ = logQ - (torch.logsumexp(logQ, dim=1, keepdim=True) + log_k)
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


def swav(
    embeddings: Tensor,
    prototypes: Tensor,
    *,
    n_crops: int = 2,
    crops_for_assign: Sequence[int] = (0, 1),
    temperature: float = 0.1,
    epsilon: float = 0.05,
    sinkhorn_iterations: int = 3,
    queue: Optional[Tensor] = None,
    normalize: bool = True,
) -> Tensor:
    """SwAV loss of crop-major ``embeddings (n_crops * B, d)`` and ``prototypes (K, d)``.

    ``prototypes`` are used as given (the module re-normalises them in place before each step, as
    the official code). ``queue``: optional ``(len(crops_for_assign), Q, d)`` past embeddings whose
    scores are prepended before Sinkhorn (read only here; :class:`SwAV` maintains it).
    """
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
    z = prepare(embeddings, normalize)  # fp16/bf16 are computed in fp32
    W = prototypes.to(z.dtype)
    scores = z @ W.t()  # (V B, K)
    log_p = [
        F.log_softmax(scores[v * B : (v + 1) * B] / temperature, dim=1) for v in range(n_crops)
    ]
    loss = scores.new_zeros(())
    for i, a in enumerate(cfa):
        out = scores[a * B : (a + 1) * B].detach()
        if queue is not None:
            out = torch.cat([queue[i].to(z.dtype) @ W.detach().t(), out])
        q = sinkhorn_knopp(out, epsilon, sinkhorn_iterations)[-B:].to(z.dtype)
        sub = sum(-(q * log_p[v]).sum(dim=1).mean() for v in range(n_crops) if v != a)
        loss = loss + sub / (n_crops - 1)
    return loss / len(cfa)


class SwAV(torch.nn.Module):
    """SwAV with its prototypes and optional queue: ``forward(embeddings)`` (crop-major).

    Args:
        dim, n_prototypes: prototype matrix ``(K, dim)`` (K = 3000 in the paper).
        n_crops: crops per sample (2 + 6 with multi-crop); crops_for_assign: crops whose codes
            are targets (the full-resolution ones, (0, 1)).
        temperature, epsilon, sinkhorn_iterations: 0.1, 0.05, 3 as the official scripts.
        queue_length: 0 (no queue) or a multiple of the batch size (3840 at batch 256). The queue
            holds past detached embeddings of every assignment crop, newest first; it is used
            (scores prepended before Sinkhorn) once full, and from then on always. Call
            :meth:`reset_queue` to start it at a later epoch (``epoch_queue_starts``).

    Each forward first re-normalises the prototypes in place (no gradient), as the official
    training loop. Freezing the prototypes for the first iterations (``freeze_prototypes_niters``)
    is done by the training loop: set ``prototypes.grad = None`` before the optimiser step.
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
        self.sinkhorn_iterations, self.normalize = sinkhorn_iterations, normalize
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
            n_crops=self.n_crops,
            crops_for_assign=self.crops_for_assign,
            temperature=self.temperature,
            epsilon=self.epsilon,
            sinkhorn_iterations=self.sinkhorn_iterations,
            queue=queue,
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
            f"temperature={self.temperature}, epsilon={self.epsilon}, queue_length={q}"
        )
