"""Benchmark hook for the structured row-wise objectives on the engine (ConR, MLCD, SupReMix,
WhitenedCSE) and SimCTG's own tiled hinge sweep.

``CASES[name](n, d, gen)`` builds inputs once (``requires_grad=True``) and returns a closure
whose call computes the scalar loss with ``backend="tiled"``; ``CASES[name + "-dense"]`` is the
same objective on materialised similarities (``backend="dense"``). Shapes, so that every sweep
contrasts ``n x n`` similarities: ConR ``n`` features (targets in 0..99, predictions = targets +
noise); MLCD ``n`` images against ``n`` centres (8 positives each, every centre sampled);
SupReMix ``n/2`` samples x 2 views (labels in 0..49) plus 8 mixtures per anchor; WhitenedCSE
three views of ``n`` (two ``n x n`` InfoNCE sweeps); SimCTG one sequence of ``n`` correlated
token states.
SwAV, GroCo, CPRD and PamC do not sweep ``n x n`` similarities (K prototypes, top-k buffers,
meta-nodes) and have no case here.

Run: ``python benchmarks/objectives_structured.py --n 1024 [--d 128] [--repeat 3]``
(forward + backward seconds per case).
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch

from contrastkit.losses.shaping.simctg import simctg_contrastive
from contrastkit.losses.shaping.whitening import whitened_cse
from contrastkit.losses.structured.conr import conr
from contrastkit.losses.structured.mlcd import mlcd
from contrastkit.losses.structured.supremix import supremix

Factory = Callable[[int, int, torch.Generator], Callable[[], torch.Tensor]]


def _x(gen, *shape):
    return torch.randn(*shape, generator=gen).requires_grad_()


def _conr(backend):
    def factory(n, d, gen):
        f = _x(gen, n, d)
        y = torch.randint(0, 100, (n,), generator=gen).float()
        yh = y + 3 * torch.randn(n, generator=gen)
        return lambda: conr(f, y, yh, backend=backend)

    return factory


def _mlcd(backend):
    def factory(n, d, gen):
        e, w = _x(gen, n, d), _x(gen, n, d)
        pos = torch.randint(0, n, (n, 8), generator=gen)
        return lambda: mlcd(e, w, pos, scale=16.0, backend=backend)

    return factory


def _supremix(backend):
    def factory(n, d, gen):
        b = max(1, n // 2)
        f = _x(gen, b, 2, d)
        y = torch.randint(0, 50, (b,), generator=gen).float()
        mix = torch.randn(2 * b, 8, d, generator=gen)
        mix /= mix.norm(dim=-1, keepdim=True)  # in place: one (n, 8, d) buffer, not two
        mask = torch.randint(-1, 2, (2 * b, 8), generator=gen)
        ml = 50 * torch.rand(2 * b, 8, generator=gen)
        return lambda: supremix(f, y, mix, mask, ml, backend=backend)

    return factory


def _whitened_cse(backend):
    def factory(n, d, gen):
        z1, z2, z3 = _x(gen, n, d), _x(gen, n, d), _x(gen, n, d)
        return lambda: whitened_cse(z1, z2, z3, backend=backend)

    return factory


def _simctg(backend):
    def factory(n, d, gen):
        # correlated token states (cosine about 0.5), so that the hinge is active on many pairs
        h = torch.randn(1, 1, d, generator=gen) + torch.randn(1, n, d, generator=gen)
        h.requires_grad_()
        return lambda: simctg_contrastive(h, margin=0.5, backend=backend)

    return factory


_BUILDERS = {
    "conr": _conr,
    "mlcd": _mlcd,
    "supremix": _supremix,
    "whitened_cse": _whitened_cse,
    "simctg": _simctg,
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
