"""Label-noise detection by neighbour consistency: a credibility score per sample from the k
nearest neighbours of its embedding (the credibility score of Shu, "Pre-trained Language Models
as Re-Annotators", arXiv:2205.05368; the paper gives no code, this is the neighbour-agreement
form its text describes).

    N_k(i) = the k nearest neighbours of e_i (cosine, i itself excluded)
    c_i    = sum_{j in N_k(i)} w_ij 1[y_j = y_i] / sum_{j in N_k(i)} w_ij
    w_ij   = 1 ("uniform") or exp(cos(e_i, e_j) / temperature) ("softmax")

A sample is suspected of carrying a wrong label when ``c_i < threshold``; its suspected label is
the (weighted) majority label of its neighbours. The neighbours come from
:func:`contrastkit.mining.search_topk` (blocked FAISS or torch top-k; memory O(N k) plus one
block, never an N x N matrix; the embeddings may be a ``numpy.memmap``).

:func:`kde_soft_labels` gives soft labels from every other sample instead (a kernel density per
class, ``p_i(c) ∝ sum_{j != i, y_j = c} exp(cos(e_i, e_j) / temperature)``), in row blocks
against all samples with one ``(N, C)`` one-hot matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from contrastkit.mining.search import check_matrix, search_topk

__all__ = ["LabelNoiseReport", "kde_soft_labels", "neighbour_credibility"]

WEIGHTINGS = ("uniform", "softmax")


@dataclass(frozen=True)
class LabelNoiseReport:
    """Result of :func:`neighbour_credibility`, one row per sample.

    ``credibility`` (N,) float64 in [0, 1]; ``suspected_label`` (N,) int64, the neighbours'
    (weighted) majority label (ties: the sample's own label if it is among the best, else the
    smallest); ``flagged`` (N,) bool, ``credibility < threshold``; ``labels`` (N,) int64, the
    given labels; ``neighbours`` (N, k) int64 and ``scores`` (N, k) float32, the neighbours and
    their similarities, best first.
    """

    credibility: np.ndarray
    suspected_label: np.ndarray
    flagged: np.ndarray
    labels: np.ndarray
    neighbours: np.ndarray
    scores: np.ndarray

    @property
    def relabel(self) -> np.ndarray:
        """Indices of flagged samples whose neighbours vote for another label."""
        return np.flatnonzero(self.flagged & (self.suspected_label != self.labels))


def _drop_self(idx: np.ndarray, sc: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, k + 1) neighbour lists that may hold the row itself -> (N, k) without it."""
    rows = np.arange(idx.shape[0])[:, None]
    is_self = idx == rows
    # drop the row itself where it was found, else the last (k + 1-th) neighbour
    drop = np.where(is_self.any(1), is_self.argmax(1), idx.shape[1] - 1)
    keep = np.ones_like(idx, dtype=bool)
    keep[np.arange(idx.shape[0]), drop] = False
    return idx[keep].reshape(-1, k), sc[keep].reshape(-1, k)


def neighbour_credibility(
    embeddings,
    labels,
    *,
    k: int = 10,
    weighting: str = "uniform",
    temperature: float = 0.1,
    threshold: float = 0.5,
    normalize: bool = True,
    index: str = "torch",
    memory_budget=None,
    block_rows: int = 4096,
) -> LabelNoiseReport:
    """Credibility of every sample's label from its k nearest neighbours.

    Args:
        embeddings: (N, d) embeddings from a model that was not fine-tuned on these labels
            (tensor, numpy array or memmap).
        labels: (N,) integer labels.
        k: neighbours per sample (``1 <= k < N``).
        weighting: ``"uniform"`` (majority vote) or ``"softmax"`` (each neighbour weighs
            ``exp(cos / temperature)``).
        temperature: the softmax weighting's temperature (> 0).
        threshold: flag samples with ``credibility < threshold``.
        normalize: cosine similarity (L2-normalised rows) or raw inner products.
        index, memory_budget: passed to :func:`contrastkit.mining.search_topk` (``"torch"`` or
            ``"flat"``: exact; others approximate).
        block_rows: samples voted at once (memory O(block_rows k^2)).

    Returns a :class:`LabelNoiseReport`.
    """
    n, _ = check_matrix("embeddings", embeddings)
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"labels must be ({n},) integer class ids, got {y.dtype} of shape {y.shape}"
        )
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k < n:
        raise ValueError(f"k must be an integer in [1, N - 1] = [1, {n - 1}], got {k!r}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    for name, v in (("temperature", temperature), ("threshold", threshold)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 1:
        raise ValueError(f"block_rows must be a positive integer, got {block_rows!r}")
    sc, idx = search_topk(
        embeddings,
        embeddings,
        k + 1,
        index=index,
        normalize=normalize,
        memory_budget=memory_budget,
    )
    idx, sc = _drop_self(idx, sc, k)
    cred = np.empty(n, np.float64)
    vote = np.empty(n, np.int64)
    y_t = torch.as_tensor(y.astype(np.int64))
    for r0 in range(0, n, block_rows):
        r1 = min(n, r0 + block_rows)
        nb = torch.as_tensor(idx[r0:r1])
        s = torch.as_tensor(sc[r0:r1]).double()
        valid = nb >= 0
        if weighting == "uniform":
            w = valid.double()
        else:
            top = s.masked_fill(~valid, -np.inf).max(1, keepdim=True).values
            w = torch.exp((s - top) / temperature).masked_fill(~valid, 0.0)
        ny = y_t[nb.clamp(min=0)]
        own = y_t[r0:r1]
        total = w.sum(1)
        cred[r0:r1] = ((w * (ny == own[:, None])).sum(1) / total.clamp(min=1e-300)).numpy()
        # weight of each neighbour's label among the neighbours: (b, k, k) -> (b, k)
        per = ((ny[:, :, None] == ny[:, None, :]) * w[:, None, :]).sum(2).masked_fill(~valid, -1)
        best = per.max(1, keepdim=True).values
        tied = (per >= best * (1 - 1e-12)) & valid
        own_best = (tied & (ny == own[:, None])).any(1)
        smallest = ny.masked_fill(~tied, torch.iinfo(torch.int64).max).min(1).values
        vote[r0:r1] = torch.where(own_best, own, smallest).numpy()
    flagged = cred < threshold
    return LabelNoiseReport(
        credibility=cred,
        suspected_label=vote,
        flagged=flagged,
        labels=y.astype(np.int64),
        neighbours=idx,
        scores=sc,
    )


def kde_soft_labels(
    embeddings,
    labels,
    *,
    temperature: float = 0.1,
    normalize: bool = True,
    block_rows: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Kernel-density soft labels: ``p_i(c) ∝ sum_{j != i, y_j = c} exp(s_ij / temperature)``.

    ``s`` is the cosine similarity (``normalize``; on the unit sphere this kernel is the
    Gaussian kernel of variance ``temperature``) or the raw inner product. Returns ``(probs,
    classes)``: ``probs`` (N, C) float64 rows summing to 1 over ``classes`` (C,), the sorted
    distinct labels. Computed in blocks of ``block_rows`` samples against all samples (memory
    O(block_rows N + N C)); a sample's own pair is left out.
    """
    n, _ = check_matrix("embeddings", embeddings)
    if n < 2:
        raise ValueError(f"embeddings needs at least 2 rows, got {n}")
    y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"labels must be ({n},) integer class ids, got {y.dtype} of shape {y.shape}"
        )
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
    if not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")
    if isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 1:
        raise ValueError(f"block_rows must be a positive integer, got {block_rows!r}")
    classes, inverse = np.unique(y, return_inverse=True)
    onehot = torch.nn.functional.one_hot(torch.as_tensor(inverse), len(classes)).double()
    x = embeddings
    z_all = torch.as_tensor(np.array(x[:n], np.float64) if not isinstance(x, torch.Tensor) else x)
    z_all = z_all.detach().to("cpu", torch.float64)
    if normalize:
        z_all = torch.nn.functional.normalize(z_all, dim=-1)
    out = np.empty((n, len(classes)), np.float64)
    for r0 in range(0, n, block_rows):
        r1 = min(n, r0 + block_rows)
        u = z_all[r0:r1] @ z_all.T / temperature
        u[torch.arange(r1 - r0), torch.arange(r0, r1)] = -torch.inf  # no self pair
        w = torch.exp(u - u.max(1, keepdim=True).values)
        mass = w @ onehot
        out[r0:r1] = (mass / mass.sum(1, keepdim=True)).numpy()
    return out, classes
