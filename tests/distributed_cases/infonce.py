"""Distributed cases of the infonce family objectives added for issue 14 (dexml, nce; both
exact: per-row means with global counts): 2 ranks == 1 process on the global batch.

DEXML's ``positives`` index the candidates of the query's own rank (as InfoNCE's in-batch
positive): the global inputs keep every query's positives inside its rank's block of rows, and
``call`` turns them into this rank's local columns."""

from __future__ import annotations

import torch

from contrastkit.distributed import _ops
from contrastkit.losses.infonce import DEXML, NCE, dexml, nce

PER_RANK = 5  # rows per rank in tests/test_distributed.py


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


CASES = {
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
