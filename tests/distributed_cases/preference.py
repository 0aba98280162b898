"""Distributed cases of the preference family (dpo, ipo, npo, d2o, sparse_po, svco, simpo, cpo,
orpo, slic_hf; all exact: per-pair means): 2 ranks == 1 process on the global batch. The
reference log-probabilities are rows too (they receive no gradient); ``d`` is the response
length of the token-level cases."""

from __future__ import annotations

import torch

from contrastkit.losses.preference import (
    CPO,
    DPO,
    NPO,
    SVCO,
    SparsePO,
    cpo,
    d2o,
    dpo,
    ipo,
    npo,
    orpo,
    simpo,
    slic_hf,
    sparse_po,
    svco,
)

K = 3  # samples per prompt (D2O)


def _rand(g, *shape, shift=-20.0, scale=3.0):
    return shift + scale * torch.randn(*shape, generator=g, dtype=torch.float64)


def _pairs(g, n, d):
    return [_rand(g, n), _rand(g, n), _rand(g, n), _rand(g, n)], []


def _pairs_beta(g, n, d):
    rows, _ = _pairs(g, n, d)
    return rows, [torch.tensor(0.3, dtype=torch.float64)]  # a learned beta


def _means(g, n, d):
    """Per-token mean log-probabilities (< 0) and token counts."""
    rows = [_rand(g, n, shift=-1.2, scale=0.3), _rand(g, n, shift=-1.2, scale=0.3)]
    return rows + [1.0 + torch.arange(n, dtype=torch.float64) % 4], []


def _samples(g, n, d):
    return [_rand(g, n, K), _rand(g, n), _rand(g, n, K), _rand(g, n)], []


def _tokens(g, n, d):
    L = d
    rows = [_rand(g, n, L, shift=-2, scale=1), _rand(g, n, L + 1, shift=-2, scale=1)]
    rows += [_rand(g, n, L, shift=-2, scale=1), _rand(g, n, L + 1, shift=-2, scale=1)]
    mw = torch.rand(n, L, generator=g) < 0.7
    ml = torch.rand(n, L + 1, generator=g) < 0.7
    mw[:, 0] = ml[:, 0] = True
    weights = [torch.rand(n, L, generator=g, dtype=torch.float64)]
    weights += [torch.rand(n, L + 1, generator=g, dtype=torch.float64)]
    kls = [torch.rand(n, L, generator=g, dtype=torch.float64)]
    kls += [torch.rand(n, L + 1, generator=g, dtype=torch.float64)]
    return rows + [mw, ml] + weights + kls + weights, []


def _conditions(g, n, d):
    return [_rand(g, n, 2, 3), _rand(g, n, 2, 3)], []


CASES = {
    "dpo": (_pairs, lambda rows, shared: dpo(*rows)),
    "dpo_conservative_learned_beta": (
        _pairs_beta,
        lambda rows, shared: dpo(*rows, beta=shared[0], label_smoothing=0.2),
    ),
    "dpo_none_module": (_pairs, lambda rows, shared: DPO(beta=0.5, reduction="none")(*rows)),
    "ipo_sum": (_pairs, lambda rows, shared: ipo(*rows, beta=0.05, reduction="sum")),
    "npo": (_pairs, lambda rows, shared: npo(rows[0], rows[2], beta=0.2)),
    "npo_none_module": (_pairs, lambda rows, shared: NPO(reduction="none")(rows[0], rows[2])),
    "d2o": (_samples, lambda rows, shared: d2o(*rows, beta=0.2, alpha=0.1)),
    "sparse_po": (_tokens, lambda rows, shared: sparse_po(*rows, reward_l1=0.01, kl_l1=0.02)),
    "sparse_po_none_module": (
        _tokens,
        lambda rows, shared: SparsePO(beta=0.5, reduction="none")(*rows[:8]),
    ),
    "svco": (_conditions, lambda rows, shared: svco(*rows)),
    "svco_sum_module": (
        _conditions,
        lambda rows, shared: SVCO(betas=(0.2, 0.0, 0.1, 0.3), reduction="sum")(*rows),
    ),
    "simpo": (_means, lambda rows, shared: simpo(rows[0], rows[1], label_smoothing=0.1)),
    "cpo_lengths": (_means, lambda rows, shared: cpo(*rows)),
    "cpo_none_module": (_pairs, lambda rows, shared: CPO(reduction="none")(rows[0], rows[1])),
    "orpo": (_means, lambda rows, shared: orpo(rows[0], rows[1], beta=0.3)),
    "slic_hf": (_pairs, lambda rows, shared: slic_hf(rows[0], rows[1], rows[2], margin=2.0)),
}
