"""Distributed cases of the weighting family's exact objectives (see ``__init__``).

Debiased InfoNCE and HCL have theirs in tests/test_distributed.py ("debiased", "hcl")."""

from __future__ import annotations

import torch

import contrastkit as ck

D_TILED = {"backend": "tiled", "chunk_size": 3}


def _rand(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _focal_inputs(g, n, d):
    rows = [_rand(g, n, d), _rand(g, n, d), _rand(g, n, 2, d)]
    return rows, [torch.tensor(0.3, dtype=torch.float64)]


CASES = {
    # queries against every rank's positives and hard negatives, learnable temperature
    "focal_info_nce": (
        _focal_inputs,
        lambda rows, shared: ck.focal_info_nce(
            rows[0], rows[1], rows[2], temperature=shared[0], gamma=2.0, **D_TILED
        ),
    ),
    "focal_info_nce_none": (
        _focal_inputs,
        lambda rows, shared: ck.focal_info_nce(
            rows[0], rows[1], temperature=shared[0], gamma=1.0, reduction="none"
        ),
    ),
    "focal_info_nce_sum_detached": (
        _focal_inputs,
        lambda rows, shared: ck.FocalInfoNCE(
            temperature=shared[0], gamma=0.5, detach_weight=True, reduction="sum"
        )(rows[0], rows[1], rows[2]),
    ),
}


def _cacr_views(V):
    def make(g, n, d):
        return [_rand(g, n, V, d)], []

    return make


def _v(rows):
    return rows[0].transpose(0, 1)  # (N, V, d) -> (V, N, d): views sharded by sample


# CACR: each rank's samples repelled from every rank's other views (first-moment statistic)
CASES.update(
    {
        "cacr": (
            _cacr_views(2),
            lambda rows, shared: ck.cacr(_v(rows), repulsion_scale=0.9, **D_TILED),
        ),
        "cacr_three_views_debiased_sum": (
            _cacr_views(3),
            lambda rows, shared: ck.CACR(
                repulsion_scale=2.0, debiased=True, reduction="sum", **D_TILED
            )(_v(rows)),
        ),
        "cacr_none": (
            _cacr_views(2),
            lambda rows, shared: ck.cacr(_v(rows), reduction="none"),
        ),
        "cacr_uniform_repulsion": (
            _cacr_views(3),
            lambda rows, shared: ck.cacr(_v(rows), weighting="without_w2"),
        ),
    }
)


def _one_to_k_inputs(K):
    def make(g, n, d):  # image i's K captions in rows K i .. K i + K - 1 (sharded alike)
        return [_rand(g, n, d), _rand(g, n * K, d)], [torch.tensor(0.2, dtype=torch.float64)]

    return make


# 1-to-K: images against every rank's captions, captions against every rank's images
CASES.update(
    {
        "one_to_k": (
            _one_to_k_inputs(2),
            lambda rows, shared: ck.one_to_k_contrastive(
                rows[0], rows[1], temperature=shared[0], **D_TILED
            ),
        ),
        "one_to_k_sum": (
            _one_to_k_inputs(3),
            lambda rows, shared: ck.one_to_k_contrastive(
                rows[0], rows[1], temperature=shared[0], reduction="sum", divide_by=1.5
            ),
        ),
        "one_to_k_none": (
            _one_to_k_inputs(2),
            lambda rows, shared: ck.one_to_k_contrastive(
                rows[0], rows[1], temperature=shared[0], reduction="none", **D_TILED
            ),
        ),
    }
)


def _team_up_inputs(g, n, d):
    strength = torch.rand(n, generator=g, dtype=torch.float64)
    return [_rand(g, n, d), _rand(g, n, d), strength], []


# CSGCL team-up: every rank's nodes as candidates, their community strengths gathered
CASES.update(
    {
        "team_up": (
            _team_up_inputs,
            lambda rows, shared: ck.team_up(*rows, 0.7, temperature=0.3, **D_TILED),
        ),
        "team_up_sum": (
            _team_up_inputs,
            lambda rows, shared: ck.TeamUp(temperature=0.5, reduction="sum")(*rows, 1.5),
        ),
    }
)


def _sbcl_inputs(g, n, d):
    labels = torch.randint(0, 3, (n,), generator=g)
    subclass = labels * 2 + torch.randint(0, 2, (n,), generator=g)  # sub-classes of classes
    temps = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    return [_rand(g, n, 2, d), labels, subclass], [temps]


# SBCL: class / sub-class sums and counts over every rank's samples, per-class temperatures
CASES.update(
    {
        "sbcl": (
            _sbcl_inputs,
            lambda rows, shared: ck.sbcl(*rows, shared[0], gamma=0.5, **D_TILED),
        ),
        "sbcl_sum": (
            _sbcl_inputs,
            lambda rows, shared: ck.SBCL(reduction="sum", gamma=0.25)(*rows, shared[0]),
        ),
    }
)
