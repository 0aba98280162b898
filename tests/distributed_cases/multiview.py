"""Distributed cases of the multiview family (see ``distributed_cases/__init__.py``).

Views are sharded by sample: the rows are ``(n, V, d)`` and the calls transpose them to the
``(V, N, d)`` layout of the objectives. Symile draws its permutations of the global batch
from a generator seeded alike in every process.
"""

from __future__ import annotations

import torch

import contrastkit as ck

TILED = {"backend": "tiled", "chunk_size": 3}


def _rand(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _t(value):
    return torch.tensor(value, dtype=torch.float64)


def _views(V):
    def make(g, n, d):
        return [_rand(g, n, V, d)], [_t(0.3)]

    return make


def _pair(g, n, d):
    return [_rand(g, n, d), _rand(g, n, d)], []


def _pair_t(g, n, d):
    return [_rand(g, n, d), _rand(g, n, d)], [_t(0.4)]


def _v(rows):
    return rows[0].transpose(0, 1)  # (N, V, d) -> (V, N, d)


CASES = {
    "mv_info_nce": (
        _views(3),
        lambda rows, shared: ck.mv_info_nce(_v(rows), temperature=shared[0], **TILED),
    ),
    "mv_info_nce_none": (
        _views(2),
        lambda rows, shared: ck.mv_info_nce(_v(rows), temperature=shared[0], reduction="none"),
    ),
    "mv_dhel": (
        _views(3),
        lambda rows, shared: ck.mv_dhel(_v(rows), temperature=shared[0], **TILED),
    ),
    "mv_dhel_none": (
        _views(4),
        lambda rows, shared: ck.mv_dhel(_v(rows), temperature=shared[0], reduction="none"),
    ),
    "mv_dhel_sum": (
        _views(2),
        lambda rows, shared: ck.MVDHEL(temperature=shared[0], reduction="sum", **TILED)(_v(rows)),
    ),
    "alignment": (_pair, lambda rows, shared: ck.alignment(rows[0], rows[1], alpha=1.5)),
    "alignment_none": (
        _pair,
        lambda rows, shared: ck.Alignment(reduction="none")(rows[0], rows[1]),
    ),
    "uniformity": (
        _pair,
        lambda rows, shared: ck.uniformity(rows[0], rows[1], potential=1.5, **TILED),
    ),
    "uniformity_dense": (_pair, lambda rows, shared: ck.Uniformity()(rows[0])),
    "cross_uniformity": (
        _pair,
        lambda rows, shared: ck.cross_uniformity(rows[0], rows[1], potential=3.0, **TILED),
    ),
    "clip_align_uniform": (
        _pair_t,
        lambda rows, shared: ck.clip_align_uniform(
            rows[0], rows[1], temperature=shared[0], cross_uniformity=True, **TILED
        ),
    ),
}


def _symile_inputs(M):
    def make(g, n, d):
        return [_rand(g, n, d) for _ in range(M)], [_t(0.2)]

    return make


def _gen():  # the same permutations of the global batch in every process
    return torch.Generator().manual_seed(5)


# Symile: candidates from every rank's modalities, permutations of the global batch
CASES.update(
    {
        "symile": (
            _symile_inputs(3),
            lambda rows, shared: ck.symile(*rows, temperature=shared[0], generator=_gen(), **TILED),
        ),
        "symile_sum_two": (
            _symile_inputs(2),
            lambda rows, shared: ck.symile(
                *rows, temperature=shared[0], generator=_gen(), reduction="sum"
            ),
        ),
        "symile_n_squared": (
            _symile_inputs(3),
            lambda rows, shared: ck.symile(
                *rows, temperature=shared[0], negative_sampling="n_squared", **TILED
            ),
        ),
    }
)
