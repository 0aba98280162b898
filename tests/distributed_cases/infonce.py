"""Distributed cases of the infonce family objectives added for issue 14 (dexml, nce; both
exact: per-row means with global counts) and 15 (info_nce_with_negatives, mixup_contrastive):
2 ranks == 1 process on the global batch.

``info_nce_with_negatives``: every rank's keys and queue rows are candidates (the global queue is
the rank-major concatenation of the ranks' queues), per-anchor negatives are rows, and the
dense weights ``(n, n)`` sharded by rows are each rank's ``(N, W N)`` weights over the global key
columns. ``mixup_contrastive``: ``perm`` holds each row's partner as a global row index.

DEXML's ``positives`` index the candidates of the query's own rank (as InfoNCE's in-batch
positive): the global inputs keep every query's positives inside its rank's block of rows, and
``call`` turns them into this rank's local columns."""

from __future__ import annotations

import torch

import contrastkit as ck
from contrastkit.distributed import _ops
from contrastkit.losses.infonce import DEXML, NCE, dexml, nce
from contrastkit.negatives import ClusterNegativeWeights

PER_RANK = 5  # rows per rank in tests/test_distributed.py
TILED = {"backend": "tiled", "chunk_size": 3}


def _rand(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _dexml(g, n, d):
    """Queries, candidates, positives (n, 3) within each block of PER_RANK rows, weights."""
    pos = torch.full((n, 3), -1, dtype=torch.long)
    for i in range(n):
        k = int(torch.randint(0, 4, (1,), generator=g))  # 0 to 3 positives
        block = (i // PER_RANK) * PER_RANK
        pos[i, :k] = block + torch.randperm(PER_RANK, generator=g)[:k]
    pos[0, 0] = 0  # at least one positive on rank 0
    weights = 0.5 + torch.rand(n, 3, generator=g, dtype=torch.float64)
    return [_rand(g, n, d), _rand(g, n, d), pos, weights], [torch.tensor(0.3, dtype=torch.float64)]


def _local(pos, n_local):
    """Global columns -> this rank's local columns (the identity in one process)."""
    ctx = _ops.current()
    off = 0 if ctx is None else ctx.rank * n_local
    return torch.where(pos >= 0, pos - off, pos)


def _ignore(pos):
    """Each query ignores the candidate of its own row (removed from the row altogether) unless
    that candidate is one of its positives; -1 otherwise."""
    rows = torch.arange(pos.shape[0])
    col = torch.where((pos == rows[:, None]).any(1), -1, rows)
    return col[:, None]


def _nce(g, n, d):
    f = [_rand(g, n), _rand(g, n, 3), _rand(g, n), _rand(g, n, 3)]
    return f, []


def _nce_shared(g, n, d):
    return [_rand(g, n), _rand(g, 2 * n), _rand(g, n), _rand(g, 2 * n)], []


def _with_negatives(g, n, d):
    """Queries, keys, a queue (2 rows per query), 3 per-anchor negatives with a validity mask
    (some rows with none valid), dense weights over the global keys (some zero, diagonal too),
    cluster labels (n, 2)."""
    valid = torch.rand(n, 3, generator=g) < 0.6
    valid[1] = False
    weights = torch.rand(n, n, generator=g, dtype=torch.float64) * 2
    weights[torch.rand(n, n, generator=g) < 0.2] = 0.0
    labels = torch.randint(0, 3, (n, 2), generator=g)
    rows = [_rand(g, n, d), _rand(g, n, d), _rand(g, 2 * n, d), _rand(g, n, 3, d), valid]
    return rows + [weights, labels], [torch.tensor(0.3, dtype=torch.float64)]


def _global(x):
    """Every rank's rows of ``x`` (``x`` itself in one process)."""
    ctx = _ops.current()
    return x if ctx is None else _ops.gather(ctx, x)


def _cluster_weights(labels):
    """MEOW weights of this rank's queries over every rank's keys: ``(N, W N)``."""
    return ClusterNegativeWeights(labels.T, _global(labels).T)


def _mixup(g, n, d):
    """Mixed x, y, a permutation of the global batch (row 0 a fixed point, partners across
    ranks), mixing coefficients (some 1: unmixed)."""
    perm = torch.randperm(n, generator=g)
    perm[[0, perm.tolist().index(0)]] = perm[[perm.tolist().index(0), 0]]  # perm(0) = 0
    mix = 0.2 + 0.6 * torch.rand(n, generator=g, dtype=torch.float64)
    mix[torch.rand(n, generator=g) < 0.25] = 1.0
    return [_rand(g, n, d), _rand(g, n, d), perm, mix], []


CASES = {
    "mixup_contrastive": (
        _mixup,
        lambda rows, shared: ck.mixup_contrastive(*rows, temperature=0.2, **TILED),
    ),
    "mixup_contrastive_official_none": (
        _mixup,
        lambda rows, shared: ck.mixup_contrastive(
            *rows, temperature=0.3, official_self_pair=True, reduction="none"
        ),
    ),
    "mixup_contrastive_sum_module": (
        _mixup,
        lambda rows, shared: ck.MixupContrastive(temperature=0.1, reduction="sum")(*rows),
    ),
    "info_nce_with_negatives": (
        _with_negatives,
        lambda rows, shared: ck.info_nce_with_negatives(
            *rows[:5], rows[5], temperature=shared[0], backend="tiled", chunk_size=4
        ),
    ),
    "info_nce_with_negatives_cluster_none": (
        _with_negatives,
        lambda rows, shared: ck.info_nce_with_negatives(
            rows[0],
            rows[1],
            None,
            rows[3],
            weights=_cluster_weights(rows[6]),
            temperature=shared[0],
            reduction="none",
            backend="tiled",
            chunk_size=3,
        ),
    ),
    "info_nce_with_negatives_moco_none": (
        _with_negatives,
        lambda rows, shared: ck.info_nce_with_negatives(
            *rows[:5], in_batch_negatives=False, temperature=shared[0], reduction="none"
        ),
    ),
    "info_nce_with_negatives_moco_sum_module": (
        _with_negatives,
        lambda rows, shared: ck.InfoNCEWithNegatives(
            temperature=shared[0], in_batch_negatives=False, reduction="sum"
        )(rows[0], rows[1], rows[2], weights=rows[5] + 0.5),
    ),
    "dexml": (
        _dexml,
        lambda rows, shared: dexml(
            rows[0], rows[1], _local(rows[2], rows[1].shape[0]), temperature=shared[0]
        ),
    ),
    "dexml_weighted_tiled_module": (
        _dexml,
        lambda rows, shared: DEXML(temperature=shared[0], backend="tiled", chunk_size=3)(
            rows[0], rows[1], _local(rows[2], rows[1].shape[0]), rows[3]
        ),
    ),
    "dexml_none": (
        _dexml,
        lambda rows, shared: dexml(
            rows[0],
            rows[1],
            _local(rows[2], rows[1].shape[0]),
            temperature=shared[0],
            reduction="none",
        ),
    ),
    "dexml_all_rows_ignore_tiled": (
        _dexml,
        lambda rows, shared: dexml(
            rows[0],
            rows[1],
            _local(rows[2], rows[1].shape[0]),
            None,
            _ignore(_local(rows[2], rows[1].shape[0])),
            temperature=shared[0],
            exclude_no_positive=False,
            backend="tiled",
        ),
    ),
    "nce": (_nce, lambda rows, shared: nce(*rows)),
    "nce_none_module": (_nce, lambda rows, shared: NCE(reduction="none")(*rows)),
    "nce_shared_noise": (_nce_shared, lambda rows, shared: nce(*rows)),
}
