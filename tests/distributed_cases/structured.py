"""Distributed cases of the structured family's exact objectives (see ``__init__``).

ConR and SupReMix gather their labels. SupReMix's anchors are view-major per rank, so cases
with per-anchor mixtures or per-row losses use one view (rank-major == view-major); with two
views the mean over anchors does not depend on their order."""

from __future__ import annotations

import torch

import contrastkit as ck

TILED = {"backend": "tiled", "chunk_size": 3}


def _rand(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _conr_inputs(g, n, d):
    y = torch.randint(0, 5, (n,), generator=g).to(torch.float64)  # ties at the window edge
    yh = y + 1.5 * _rand(g, n)
    omega = torch.rand(n, generator=g, dtype=torch.float64) + 0.5
    return [_rand(g, n, d), y, yh, omega], [torch.tensor(0.2, dtype=torch.float64)]


def _supremix_inputs(views, mixtures):
    def make(g, n, d):
        rows = [_rand(g, n, views, d), torch.randint(0, 4, (n,), generator=g).to(torch.float64)]
        if mixtures:
            mix = torch.nn.functional.normalize(_rand(g, n * views, 3, d), dim=-1)
            mask = torch.randint(-1, 2, (n * views, 3), generator=g)
            rows += [mix, mask, 4 * torch.rand(n * views, 3, generator=g, dtype=torch.float64)]
        return rows, [torch.tensor(0.4, dtype=torch.float64)]

    return make


CASES = {
    "conr": (
        _conr_inputs,
        lambda rows, shared: ck.conr(*rows, temperature=shared[0], window=1.0, e=0.2, **TILED),
    ),
    "conr_paper_linear_sum": (
        _conr_inputs,
        lambda rows, shared: ck.ConR(
            temperature=shared[0], denominator="paper", push="linear", reduction="sum"
        )(*rows),
    ),
    "conr_none": (
        _conr_inputs,
        lambda rows, shared: ck.conr(*rows, temperature=shared[0], reduction="none"),
    ),
    "supremix": (
        _supremix_inputs(2, False),
        lambda rows, shared: ck.supremix(rows[0], rows[1], temperature=shared[0], **TILED),
    ),
    "supremix_mixtures": (
        _supremix_inputs(1, True),
        lambda rows, shared: ck.SupReMix(temperature=shared[0], distance="L2")(*rows),
    ),
    "supremix_none_unweighted": (
        _supremix_inputs(1, True),
        lambda rows, shared: ck.supremix(
            *rows, temperature=shared[0], use_weight=False, reduction="none", **TILED
        ),
    ),
}
