"""Distributed cases of the margin family's exact objectives (triplet_margin,
batch_hard_triplet, pair_margin_contrastive, max_margin_contrastive): 2 ranks == 1 process on
the global batch. The rank-local ones (proto_triplet, icnn) raise under a group, which the
central rank-local test checks."""

from __future__ import annotations

import torch

from contrastkit.losses.margin import (
    BatchHardTriplet,
    MaxMarginContrastive,
    PairMarginContrastive,
    TripletMargin,
    batch_hard_triplet,
    max_margin_contrastive,
    pair_margin_contrastive,
    triplet_margin,
)

T, T_NEG, V = 4, 3, 6  # token-level: positive length, negative length, vocabulary


def _rand(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _triplets(g, n, d):
    return [_rand(g, n, d), _rand(g, n, d), _rand(g, n, d)], []


def _labelled(g, n, d):
    labels = torch.randint(0, 3, (n,), generator=g)
    labels[0] = 50  # a singleton: no positive anywhere, left out of the mean
    labels[-1] = labels[1]  # a positive on the other rank
    return [_rand(g, n, d), labels], []


def _pairs(g, n, d):
    dissimilar = torch.randint(0, 2, (n,), generator=g)
    dissimilar[:2] = torch.tensor([0, 1])
    return [_rand(g, n, d), _rand(g, n, d), dissimilar], []


def _tokens(g, n, d):
    positive = torch.randint(0, V, (n, T), generator=g)
    negative = torch.randint(0, V, (n, T_NEG), generator=g)
    negative[1, 2] = -100  # padding: NLL 0, still counted in the mean
    return [_rand(g, n, T, V), positive, negative], []


CASES = {
    # margins large enough that most hinges are active (random d = 8 embeddings)
    "triplet_margin": (_triplets, lambda rows, shared: triplet_margin(*rows, margin=2.0)),
    "triplet_margin_sum_swap": (
        _triplets,
        lambda rows, shared: triplet_margin(
            *rows, margin=1.0, swap=True, squared=True, normalize=True, reduction="sum"
        ),
    ),
    "triplet_margin_none_module": (
        _triplets,
        lambda rows, shared: TripletMargin(margin=2.0, soft=True, reduction="none")(*rows),
    ),
    # mined over every rank's rows: hardest positives and negatives on the other rank too
    "batch_hard_triplet": (
        _labelled,
        lambda rows, shared: batch_hard_triplet(*rows, margin=2.0, chunk_size=3),
    ),
    "batch_hard_triplet_none_module": (
        _labelled,
        lambda rows, shared: BatchHardTriplet(margin=1.0, soft=True, reduction="none")(*rows),
    ),
    "batch_hard_triplet_sum_squared": (
        _labelled,
        lambda rows, shared: batch_hard_triplet(
            *rows, margin=0.3, squared=True, normalize=True, reduction="sum"
        ),
    ),
    "pair_margin_contrastive": (
        _pairs,
        lambda rows, shared: pair_margin_contrastive(*rows, margin=5.0),
    ),
    "pair_margin_contrastive_none_module": (
        _pairs,
        lambda rows, shared: PairMarginContrastive(margin=1.5, normalize=True, reduction="none")(
            *rows
        ),
    ),
    "max_margin_contrastive": (
        _tokens,
        lambda rows, shared: max_margin_contrastive(*rows, margin=2.0, alpha=0.5),
    ),
    "max_margin_contrastive_sum_module": (
        _tokens,
        lambda rows, shared: MaxMarginContrastive(margin=1.0, reduction="sum")(*rows),
    ),
}
