"""Distributed cases of the ranking family's exact objectives (cosent, angle, matryoshka): 2
ranks == 1 process on the global batch. Every rank's pair scores and labels are gathered, so
the ordered pairs that straddle the ranks count too; ties across ranks are included.
Matryoshka is exact through the objective it wraps (MNRL, CoSENT). The rank-local ones
(list_net, plackett_luce) raise under a group, which the central rank-local test checks."""

from __future__ import annotations

import functools

import torch

from contrastkit.losses.infonce import MultipleNegativesRanking
from contrastkit.losses.ranking import AnglE, CoSENT, Matryoshka, angle, cosent, matryoshka


def _rand(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _pairs(g, n, d):
    labels = torch.randint(0, 4, (n,), generator=g).to(torch.float64) / 3
    labels[-1] = labels[0]  # a tie across the ranks
    return [_rand(g, n, d), _rand(g, n, d), labels], []


def _anchors(g, n, d):
    return [_rand(g, n, d), _rand(g, n, d), _rand(g, n, d)], []


def _pairs_scale(g, n, d):
    rows, _ = _pairs(g, n, d)
    rows[2] = (rows[2] * 3).long()  # integer labels
    return rows, [torch.tensor(5.0, dtype=torch.float64)]  # a learnable scale


CASES = {
    "cosent": (_pairs, lambda rows, shared: cosent(*rows, scale=3.0)),
    "cosent_learned_scale_module": (
        _pairs_scale,
        lambda rows, shared: CoSENT()(*rows, scale=shared[0]),
    ),
    "angle": (_pairs, lambda rows, shared: angle(*rows, temperature=0.25)),
    "angle_learned_scale_module": (
        _pairs_scale,
        lambda rows, shared: AnglE()(*rows, scale=shared[0]),
    ),
    # in-batch negatives from every rank at every prefix
    "matryoshka_mnrl_module": (
        _anchors,
        lambda rows, shared: Matryoshka(
            objective=MultipleNegativesRanking(), dims=(8, 4, 2), weights=(1.0, 0.5, 2.0)
        )(*rows),
    ),
    "matryoshka_cosent": (
        _pairs_scale,
        lambda rows, shared: matryoshka(
            *rows, objective=functools.partial(cosent, scale=shared[0]), dims=(8, 3)
        ),
    ),
}
