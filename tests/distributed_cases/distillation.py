"""Distributed cases of the distillation family (margin_mse, kl_distillation,
in_batch_kl_distillation, embedding_distillation, momentum_distillation; all exact: per-query
means): 2 ranks == 1 process on the global batch. Teacher tensors are rows too (they receive no
gradient); momentum_distillation's queues are shared (the same on every rank)."""

from __future__ import annotations

import torch

from contrastkit.losses.distillation import (
    EmbeddingDistillation,
    InBatchKLDistillation,
    KLDistillation,
    MarginMSE,
    MomentumDistillation,
    embedding_distillation,
    in_batch_kl_distillation,
    kl_distillation,
    margin_mse,
    momentum_distillation,
)

K = 4  # listed candidates per query


def _rand(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _listed(g, n, d):
    return [_rand(g, n, d), _rand(g, n, K, d), 3 * _rand(g, n, K)], []


def _listed_padded(g, n, d):
    rows, _ = _listed(g, n, d)
    rows[2][1, 2] = float("-inf")  # a padded candidate on rank 0
    rows[2][-1, 0] = float("-inf")  # and one on the last rank
    return rows, [torch.tensor(0.5, dtype=torch.float64)]  # a learned student temperature


def _margins(g, n, d):
    rows, _ = _listed(g, n, d)
    rows[2] = rows[2][:, :1] - rows[2][:, 1:]  # the teacher's margins (N, K - 1)
    return rows, []


def _in_batch(g, n, d):
    """Student query / candidate rows and the teacher's (dimension d + 3) of the same rows."""
    rows = [_rand(g, n, d), _rand(g, n, d), _rand(g, n, d + 3), _rand(g, n, d + 3)]
    return rows, [torch.tensor(0.5, dtype=torch.float64)]


def _embeddings(g, n, d):
    return [_rand(g, n, d), _rand(g, n, d)], []


def _albef(g, n, d):
    """Student image / text features, and momentum features near them (rows of every rank)."""
    v, t = _rand(g, n, d), _rand(g, n, d)
    return [v, t, v + 0.3 * _rand(g, n, d), t + 0.3 * _rand(g, n, d)], [
        torch.tensor(0.2, dtype=torch.float64)  # a learnable temperature
    ]


def _queues(d, q=6):
    """The shared queues: the same rows on every rank (and in the single process)."""
    g = torch.Generator().manual_seed(7)
    return [torch.nn.functional.normalize(_rand(g, q, d), dim=1) for _ in range(2)]


def _albef_module(rows, shared):
    itc = MomentumDistillation(
        rows[0].shape[1], queue_size=6, alpha=0.7, generator=torch.Generator().manual_seed(3)
    ).double()
    return itc(*rows)


CASES = {
    "margin_mse": (_listed, lambda rows, shared: margin_mse(*rows)),
    "margin_mse_sum_margins": (
        _margins,
        lambda rows, shared: margin_mse(*rows, normalize=True, reduction="sum"),
    ),
    "margin_mse_none_module": (
        _listed,
        lambda rows, shared: MarginMSE(reduction="none")(*rows),
    ),
    "kl_distillation": (
        _listed,
        lambda rows, shared: kl_distillation(*rows, temperature=2.0, teacher_temperature=0.5),
    ),
    "kl_distillation_padded_learned_temperature": (
        _listed_padded,
        lambda rows, shared: kl_distillation(*rows, temperature=shared[0]),
    ),
    "kl_distillation_sum_ce": (
        _listed,
        lambda rows, shared: kl_distillation(
            *rows, divergence="cross_entropy", normalize=True, reduction="sum"
        ),
    ),
    "kl_distillation_none_module": (
        _listed_padded,
        lambda rows, shared: KLDistillation(temperature=0.3, reduction="none")(*rows),
    ),
    # every rank's candidates are columns: the teacher's candidate embeddings are gathered
    "in_batch_kl_distillation": (
        _in_batch,
        lambda rows, shared: in_batch_kl_distillation(
            *rows, temperature=shared[0], teacher_temperature=0.3
        ),
    ),
    "in_batch_kl_distillation_tiled_sum": (
        _in_batch,
        lambda rows, shared: in_batch_kl_distillation(
            *rows, normalize=True, temperature=0.1, reduction="sum", backend="tiled", chunk_size=3
        ),
    ),
    "in_batch_kl_distillation_none_module": (
        _in_batch,
        lambda rows, shared: InBatchKLDistillation(
            temperature=2.0, temperature_squared=False, reduction="none", chunk_size=2
        )(*rows),
    ),
    "embedding_distillation": (_embeddings, lambda rows, shared: embedding_distillation(*rows)),
    "embedding_distillation_l2_sum": (
        _embeddings,
        lambda rows, shared: embedding_distillation(*rows, distance="l2", reduction="sum"),
    ),
    "embedding_distillation_none_module": (
        _embeddings,
        lambda rows, shared: EmbeddingDistillation(distance="cosine", reduction="none")(*rows),
    ),
    "momentum_distillation": (
        _albef,
        lambda rows, shared: momentum_distillation(
            *rows, *_queues(rows[0].shape[1]), temperature=shared[0]
        ),
    ),
    "momentum_distillation_tiled_none_no_queue": (
        _albef,
        lambda rows, shared: momentum_distillation(
            *rows, alpha=0.9, reduction="none", backend="tiled", chunk_size=3
        ),
    ),
    "momentum_distillation_alpha0_sum": (
        _albef,
        lambda rows, shared: momentum_distillation(
            *rows, *_queues(rows[0].shape[1]), alpha=0.0, temperature=shared[0], reduction="sum"
        ),
    ),
    "momentum_distillation_module": (_albef, _albef_module),
}
