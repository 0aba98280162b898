"""Benchmark hook for the weighting objectives (SogCLR, iSogCLR, bimodal
SogCLR, AMCL, CACR, focal InfoNCE, 1-to-K).

``CASES[name](n, d, gen)`` builds inputs once (``requires_grad=True``) and returns a closure
whose call computes the scalar loss (engine version, ``backend="tiled"``);
``CASES[name + "-dense"]`` is the same objective on materialised logits (``backend="dense"``;
AMCL: a single search block). Shapes, so that every case contrasts ``n x n`` similarities:
SogCLR / iSogCLR / AMCL two views of ``n/2`` (stacked to ``n`` anchors and candidates); focal:
``n`` queries against ``n`` positives; CACR: two views of ``n``; 1-to-K: ``n/2`` images against
``n`` texts (K = 2, ``n/2 x n`` logits); bimodal SogCLR and iSogCLR: ``n`` images and ``n``
texts (two ``n x n`` directions). Stateful objectives read a fixed state (``update=False``), so
repeated calls do the same work.

Run: ``python benchmarks/objectives_adaptive.py --n 1024 [--dense]`` (forward + backward
seconds per case, best of ``--repeat`` calls after one warm-up call).
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch

from contrastkit.losses.weighting.amcl import amcl
from contrastkit.losses.weighting.cacr import cacr
from contrastkit.losses.weighting.focal import focal_info_nce
from contrastkit.losses.weighting.one_to_k import one_to_k_contrastive
from contrastkit.losses.weighting.sogclr import isogclr, sogclr
from contrastkit.losses.weighting.sogclr_bimodal import isogclr_bimodal, sogclr_bimodal

Factory = Callable[[int, int, torch.Generator], Callable[[], torch.Tensor]]


def _x(gen, *shape):
    return torch.randn(*shape, generator=gen).requires_grad_()


def _sogclr(backend):
    def factory(n, d, gen):
        B = n // 2
        z1, z2 = _x(gen, B, d), _x(gen, B, d)
        idx = torch.randperm(4 * B, generator=gen)[:B]
        u = torch.rand(4 * B, generator=gen) * 10 + 1

        def call():
            return sogclr(z1, z2, idx, u, gamma=0.9, update=False, backend=backend)

        return call

    return factory


def _isogclr(backend):
    def factory(n, d, gen):
        B = n // 2
        z1, z2 = _x(gen, B, d), _x(gen, B, d)
        idx = torch.randperm(4 * B, generator=gen)[:B]
        u = torch.rand(4 * B, generator=gen) * 10 + 1
        tau = torch.rand(4 * B, generator=gen) * 0.3 + 0.05
        g = torch.zeros(4 * B)

        def call():
            return isogclr(z1, z2, idx, u, tau, g, update=False, backend=backend)

        return call

    return factory


def _sogclr_bimodal(backend):
    def factory(n, d, gen):
        img, txt = _x(gen, n, d), _x(gen, n, d)
        idx = torch.randperm(4 * n, generator=gen)[:n]
        st = [torch.rand(4 * n, generator=gen) + 0.5, torch.rand(4 * n, generator=gen) * 5]
        st = st + [torch.rand(4 * n, generator=gen) + 0.5, torch.rand(4 * n, generator=gen) * 5]

        def call():
            return sogclr_bimodal(
                img, txt, idx, *st, temperature=0.05, update=False, normalize=True, backend=backend
            )

        return call

    return factory


def _isogclr_bimodal(backend):
    def factory(n, d, gen):
        img, txt = _x(gen, n, d), _x(gen, n, d)
        idx = torch.randperm(4 * n, generator=gen)[:n]

        def state(lo, hi):
            return lo + (hi - lo) * torch.rand(4 * n, generator=gen)

        st = [state(0.5, 1.5), state(0.0, 5.0), state(0.5, 1.5), state(0.0, 5.0)]
        st += [state(0.01, 0.05), state(0.01, 0.05), torch.zeros(4 * n), torch.zeros(4 * n)]

        def call():
            return isogclr_bimodal(
                img, txt, idx, *st, update=False, normalize=True, backend=backend
            )

        return call

    return factory


def _focal(backend):
    def factory(n, d, gen):
        q, p = _x(gen, n, d), _x(gen, n, d)
        return lambda: focal_info_nce(q, p, temperature=0.05, gamma=2.0, backend=backend)

    return factory


def _one_to_k(backend):
    def factory(n, d, gen):
        v, t = _x(gen, n // 2, d), _x(gen, n, d)
        return lambda: one_to_k_contrastive(v, t, temperature=0.07, backend=backend)

    return factory


def _cacr(backend):
    def factory(n, d, gen):
        views = _x(gen, 2, n, d)
        return lambda: cacr(views, repulsion_scale=0.9, backend=backend)

    return factory


def _amcl(dense):
    def factory(n, d, gen):
        z1, z2 = _x(gen, n // 2, d), _x(gen, n // 2, d)

        def temperature(head, a, b):  # a fixed pair-dependent temperature in [0.1, 0.3]
            return 0.2 + 0.1 * (a * b).sum(-1)

        block = n if dense else None
        return lambda: amcl(z1, z2, temperature, beta=0.1, topk=1, chunk_size=block)

    return factory


CASES: dict[str, Factory] = {}
for _name, _make in (
    ("sogclr", _sogclr),
    ("isogclr", _isogclr),
    ("sogclr_bimodal", _sogclr_bimodal),
    ("isogclr_bimodal", _isogclr_bimodal),
    ("focal_info_nce", _focal),
    ("one_to_k", _one_to_k),
    ("cacr", _cacr),
):
    CASES[_name] = _make("tiled")
    CASES[_name + "-dense"] = _make("dense")
CASES["amcl"] = _amcl(False)
CASES["amcl-dense"] = _amcl(True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="time forward + backward of each case")
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dense", action="store_true", help="also the -dense cases")
    p.add_argument("--cases", default="", help="comma list (default: all)")
    p.add_argument("--repeat", type=int, default=2, help="timed calls after a warm-up (min)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [c for c in args.cases.split(",") if c] or [
        c for c in CASES if args.dense or not c.endswith("-dense")
    ]
    for name in names:
        call = CASES[name](args.n, args.d, torch.Generator().manual_seed(0))
        times = []
        for _ in range(args.repeat + 1):  # the first call warms up (allocator, thread pool)
            t0 = time.perf_counter()
            loss = call()
            loss.backward()
            times.append(time.perf_counter() - t0)
        best = min(times[1:])
        print(f"{name:22s} n={args.n:7d} d={args.d}  {best:8.3f} s  loss={loss.item():.6f}")


if __name__ == "__main__":
    main()
