"""Benchmark hook (bench_objectives.py): DEXML on the engine against InfoNCE in the same run,
and their dense references."""

import torch

from contrastkit.losses.infonce import dexml, info_nce


def _x(gen, *shape):
    return torch.randn(*shape, generator=gen).requires_grad_()


def _dexml(backend):
    def factory(n, d, gen):
        q, c = _x(gen, n, d), _x(gen, n, d)
        pos = (torch.arange(n)[:, None] + torch.tensor([0, 1, 2])) % n  # 3 distinct positives
        return lambda: dexml(q, c, pos, temperature=0.05, backend=backend)

    return factory


def _info_nce(backend):  # the same run's baseline
    def factory(n, d, gen):
        q, c = _x(gen, n, d), _x(gen, n, d)
        return lambda: info_nce(q, c, temperature=0.05, backend=backend)

    return factory


CASES = {}
for _name, _build in {"dexml": _dexml, "info_nce_dexml_baseline": _info_nce}.items():
    CASES[_name] = _build("tiled")
    CASES[_name + "-dense"] = _build("dense")
