"""Benchmark hooks for ALBEF's momentum distillation (bench_objectives.py): ``n`` image-text
pairs of width ``d``, no queue, so each direction is one ``n x n`` row problem (2 sweeps per
call, as ``info_nce_i2t_t2i``: two InfoNCE calls on the same candidates)."""

import torch

from contrastkit import info_nce
from contrastkit.losses.distillation import momentum_distillation


def _albef_inputs(n, d, gen):
    v = torch.randn(n, d, generator=gen).requires_grad_()
    t = torch.randn(n, d, generator=gen).requires_grad_()
    vm = v.detach() + 0.1 * torch.randn(n, d, generator=gen)  # momentum features (no grad)
    tm = t.detach() + 0.1 * torch.randn(n, d, generator=gen)
    return v, t, vm, tm


def _momentum_distillation(backend):
    def factory(n, d, gen):
        v, t, vm, tm = _albef_inputs(n, d, gen)  # no queue: two n x n row problems
        return lambda: momentum_distillation(
            v, t, vm, tm, alpha=0.4, temperature=0.07, backend=backend
        )

    return factory


def _info_nce_both_directions(backend):  # the same candidates, one-hot targets (alpha = 0)
    def factory(n, d, gen):
        v, t, vm, tm = _albef_inputs(n, d, gen)
        return lambda: (
            (
                info_nce(v, tm, temperature=0.07, backend=backend)
                + info_nce(t, vm, temperature=0.07, backend=backend)
            )
            / 2
        )

    return factory


CASES = {}
for _name, _build in {
    "momentum_distillation": _momentum_distillation,
    "info_nce_i2t_t2i": _info_nce_both_directions,
}.items():
    CASES[_name] = _build("tiled")
    CASES[_name + "-dense"] = _build("dense")
