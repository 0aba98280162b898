"""Distributed cases of the structured family's exact objectives (see ``__init__``).

ConR and SupReMix gather their labels. MLCD's centres are replicated (``shared``: every rank holds
them, their gradient is the global loss's) and its negative centres are the same on every rank
(drawn from an identically seeded generator, or given). SupReMix's anchors are view-major per
rank, so cases with per-anchor mixtures or per-row losses use one view (rank-major ==
view-major); with two views the mean over anchors does not depend on their order."""

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


def _mlcd_inputs(g, n, d):
    """Embeddings, positives (n, 2) with -1 padding; shared: 9 centres."""
    pos = torch.randint(0, 9, (n, 2), generator=g)
    pos[torch.rand(n, generator=g) < 0.3, 1] = -1
    return [_rand(g, n, d), pos], [_rand(g, 9, d)]


def _gen():
    return torch.Generator().manual_seed(11)


def _swav_inputs(crops, queue):
    """Sample-major crops ``(n, crops, d)`` (``_crop_major`` stacks a rank's crops crop-major),
    ``queue`` rows per sample for two assignment crops, 6 prototypes (held by every rank)."""

    def make(g, n, d):
        rows = [_rand(g, n, crops, d)]
        if queue:
            rows.append(torch.nn.functional.normalize(_rand(g, n, queue, d), dim=-1))
        return rows, [_rand(g, 6, d)]

    return make


def _codes_read(scores):
    return (ck.sinkhorn_knopp(scores, epsilon=0.2) * scores).sum(dim=1)


def _crop_major(x):
    return x.transpose(0, 1).reshape(-1, x.shape[-1])


CASES = {
    "mlcd": (
        _mlcd_inputs,
        lambda rows, shared: ck.mlcd(
            rows[0],
            shared[0],
            rows[1],
            scale=3.0,
            margin=0.1,
            negative_ratio=0.6,
            generator=_gen(),
            **TILED,
        ),
    ),
    "mlcd_mlc_none": (
        _mlcd_inputs,
        lambda rows, shared: ck.mlcd(
            rows[0],
            shared[0],
            rows[1],
            torch.tensor([0, 2, 3, 5, 8]),
            scale=2.0,
            form="mlc",
            reduction="none",
        ),
    ),
    "mlcd_sum_module": (
        _mlcd_inputs,
        lambda rows, shared: ck.MLCD(scale=4.0, reduction="sum", **TILED)(
            rows[0], shared[0], rows[1]
        ),
    ),
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
    "swav": (
        _swav_inputs(2, 0),
        lambda rows, shared: ck.swav(_crop_major(rows[0]), shared[0], temperature=0.2),
    ),
    "swav_three_crops_queue_sum": (
        _swav_inputs(3, 2),
        lambda rows, shared: ck.swav(
            _crop_major(rows[0]),
            shared[0],
            rows[1].transpose(0, 1),  # (crops_for_assign, queue rows of this rank, d)
            n_crops=3,
            crops_for_assign=(0, 2),
            epsilon=0.3,
            sinkhorn_iterations=4,
            reduction="sum",
        ),
    ),
    "swav_none": (
        _swav_inputs(2, 0),
        lambda rows, shared: ck.swav(
            _crop_major(rows[0]), shared[0], crops_for_assign=(1,), reduction="none"
        ),
    ),
    "sinkhorn_knopp": (  # the codes of this rank's rows, read through a differentiable product
        _swav_inputs(1, 0),
        lambda rows, shared: _codes_read(rows[0][:, 0] @ shared[0].detach().t()),
    ),
}
