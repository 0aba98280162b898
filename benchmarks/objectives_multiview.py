"""Benchmark hook for the multi-view / multi-modal row-wise objectives (MV-InfoNCE, MV-DHEL,
Symile, uniformity, cross-uniformity).

``CASES[name](n, d, gen)`` builds inputs once (``requires_grad=True``) and returns a closure
whose call computes the scalar loss of the engine version (``backend="tiled"``);
``CASES[name + "-dense"]`` is the same objective on materialised logits (``backend="dense"``).
Shapes, so that every sweep contrasts ``n x n`` similarities: MV-InfoNCE 4 views of ``n/4``
samples (``n`` anchors and candidates); MV-DHEL 4 views of ``n`` samples (4 sweeps of
``n x n``); Symile 3 modalities of ``n`` (3 sweeps, permutations drawn once from ``gen``);
uniformity ``n`` points; cross-uniformity two sets of ``n``.

Run: ``python benchmarks/objectives_multiview.py --n 1024 [--d 128] [--repeat 3]``
(forward + backward seconds per case).
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch

from contrastkit.losses.multiview import cross_uniformity, mv_dhel, mv_info_nce, symile, uniformity

Factory = Callable[[int, int, torch.Generator], Callable[[], torch.Tensor]]
VIEWS = 4


def _x(gen, *shape):
    return torch.randn(*shape, generator=gen).requires_grad_()


def _mv_info_nce(backend):
    def factory(n, d, gen):
        views = _x(gen, VIEWS, max(1, n // VIEWS), d)
        return lambda: mv_info_nce(views, temperature=0.5, backend=backend)

    return factory


def _mv_dhel(backend):
    def factory(n, d, gen):
        views = _x(gen, VIEWS, n, d)
        return lambda: mv_dhel(views, temperature=0.2, backend=backend)

    return factory


def _symile(backend):
    def factory(n, d, gen):
        reps = [_x(gen, n, d) for _ in range(3)]
        perms = [[torch.randperm(n, generator=gen) for _ in range(2)] for _ in range(3)]
        return lambda: symile(reps, temperature=0.07, permutations=perms, backend=backend)

    return factory


def _uniformity(backend):
    def factory(n, d, gen):
        x = _x(gen, n, d)
        return lambda: uniformity(x, potential=2.0, backend=backend)

    return factory


def _cross_uniformity(backend):
    def factory(n, d, gen):
        x, y = _x(gen, n, d), _x(gen, n, d)
        return lambda: cross_uniformity(x, y, potential=2.0, backend=backend)

    return factory


_BUILDERS = {
    "mv_info_nce": _mv_info_nce,
    "mv_dhel": _mv_dhel,
    "symile": _symile,
    "uniformity": _uniformity,
    "cross_uniformity": _cross_uniformity,
}
CASES: dict[str, Factory] = {}
for _name, _build in _BUILDERS.items():
    CASES[_name] = _build("tiled")
    CASES[_name + "-dense"] = _build("dense")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--d", type=int, default=128)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cases", default=",".join(CASES), help="comma list")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"n={args.n} d={args.d} threads={args.threads} (forward + backward, best of repeats)")
    for name in [c for c in args.cases.split(",") if c]:
        closure = CASES[name](args.n, args.d, torch.Generator().manual_seed(0))
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            loss = closure()
            loss.backward()
            best = min(best, time.perf_counter() - t0)
        print(f"{name:24s} {best:8.3f} s   loss {float(loss.detach()):.6f}")


if __name__ == "__main__":
    main()
