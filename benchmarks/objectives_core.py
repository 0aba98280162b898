"""Benchmark hook (bench_objectives.py) for the core engine objectives: the InfoNCE family
(NT-Xent, DCL, DCLW, SupCon, CWCL, SigLIP, MultipleNegativesRanking, InfoNCE with a queue,
M3CoL's mixup contrast, in-batch KL distillation, Matryoshka) and the weighted ones (debiased
and hard-negative InfoNCE, SBCL, CSGCL's team-up, CLIP + alignment + uniformity).

``CASES[name](n, d, gen)`` builds inputs once (``requires_grad=True`` on what the loss trains)
and returns a closure computing the scalar loss with ``backend="tiled"``; ``name + "-dense"``
is the same on materialised logits (``backend="dense"``). Shapes, so that each case contrasts
about ``n x n`` similarities per sweep (``SWEEPS`` in bench_objectives.py):

* two views stacked into ``n`` anchors (NT-Xent, DCL, DCLW, debiased / hard-negative InfoNCE,
  team-up: two views of ``n/2``; SupCon, SBCL: ``n/2`` samples x 2 views, labels in 0..99,
  SBCL two sub-classes per class): one ``n x n`` sweep;
* two modalities of ``n`` (CWCL, SigLIP, M3CoL, in-batch KL distillation with a teacher of the
  same width): one ``n x n`` sweep with both directions counted once, as ``clip``; the
  teacher's and CWCL's target similarities are extra GEMMs of that sweep, not sweeps;
* MultipleNegativesRanking: ``n`` anchors against ``n`` positives and ``n`` hard negatives
  (``n x 2n``: 2 sweeps);
* InfoNCE with negatives: ``n`` queries against a MoCo queue of ``n`` keys plus their own key
  and one per-anchor negative (``in_batch_negatives=False``: ``n x (n + 2)``, 1 sweep);
* CLIP + alignment + uniformity: CLIP's ``n x n`` plus the uniformity of each modality
  (``n x n`` each): 3 sweeps;
* Matryoshka: InfoNCE on ``n x n`` at prefixes ``d, d/2, d/4, d/8``: counted as 4 sweeps
  (each a full ``n x n`` softmax; their GEMMs add up to ``1.875`` sweeps at width ``d``).
"""

from __future__ import annotations

from typing import Callable

import torch

from contrastkit import functional as CF

Factory = Callable[[int, int, torch.Generator], Callable[[], torch.Tensor]]
TAU = 0.1


def _x(gen, *shape):
    return torch.randn(*shape, generator=gen).requires_grad_()


def _two_views(fn, **kw):  # two views of n/2 stacked into n anchors
    def build(backend):
        def factory(n, d, gen):
            b = max(2, n // 2)
            z1, z2 = _x(gen, b, d), _x(gen, b, d)
            return lambda: fn(z1, z2, backend=backend, **kw)

        return factory

    return build


def _two_modalities(fn, **kw):  # n image / text pairs
    def build(backend):
        def factory(n, d, gen):
            a, b = _x(gen, n, d), _x(gen, n, d)
            return lambda: fn(a, b, backend=backend, **kw)

        return factory

    return build


def _supcon(backend):
    def factory(n, d, gen):
        b = max(2, n // 2)
        f = _x(gen, b, 2, d)
        y = torch.randint(0, 100, (b,), generator=gen)
        return lambda: CF.supcon(f, y, temperature=TAU, backend=backend)

    return factory


def _sbcl(backend):
    def factory(n, d, gen):
        b = max(2, n // 2)
        f = _x(gen, b, 2, d)
        y = torch.randint(0, 100, (b,), generator=gen)
        sub = y * 2 + torch.randint(0, 2, (b,), generator=gen)  # two sub-classes per class
        return lambda: CF.sbcl(f, y, sub, temperature=TAU, backend=backend)

    return factory


def _cwcl(backend):
    def factory(n, d, gen):
        frozen = torch.randn(n, d, generator=gen)  # the frozen encoder's: no gradient
        trained = _x(gen, n, d)
        return lambda: CF.cwcl(frozen, trained, temperature=0.07, backend=backend)

    return factory


def _mnrl(backend):
    def factory(n, d, gen):
        a, p, neg = _x(gen, n, d), _x(gen, n, d), _x(gen, n, d)
        return lambda: CF.multiple_negatives_ranking(a, p, neg, scale=20.0, backend=backend)

    return factory


def _with_negatives(backend):
    def factory(n, d, gen):
        q, k = _x(gen, n, d), _x(gen, n, d)
        queue = torch.randn(n, d, generator=gen)  # a MoCo queue: no gradient
        extra = _x(gen, n, 1, d)
        return lambda: CF.info_nce_with_negatives(
            q, k, queue, extra, in_batch_negatives=False, temperature=0.07, backend=backend
        )

    return factory


def _mixup(backend):
    def factory(n, d, gen):
        x, y = _x(gen, n, d), _x(gen, n, d)
        perm = torch.randperm(n, generator=gen)
        mix = torch.rand(n, generator=gen)
        return lambda: CF.mixup_contrastive(x, y, perm, mix, temperature=TAU, backend=backend)

    return factory


def _kl(backend):
    def factory(n, d, gen):
        q, c = _x(gen, n, d), _x(gen, n, d)
        tq, tc = torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen)
        return lambda: CF.in_batch_kl_distillation(
            q, c, tq, tc, temperature=0.05, normalize=True, backend=backend
        )

    return factory


def _team_up(backend):
    def factory(n, d, gen):
        b = max(2, n // 2)
        h1, h2 = _x(gen, b, d), _x(gen, b, d)
        strength = 0.3 * torch.rand(b, generator=gen)
        return lambda: CF.team_up(h1, h2, strength, 0.5, temperature=0.2, backend=backend)

    return factory


def _matryoshka(backend):
    def factory(n, d, gen):
        a, b = _x(gen, n, d), _x(gen, n, d)
        dims = tuple(sorted({max(1, d // k) for k in (1, 2, 4, 8)}, reverse=True))

        def objective(x, y):
            return CF.info_nce(x, y, temperature=0.05, backend=backend)

        return lambda: CF.matryoshka(a, b, objective=objective, dims=dims)

    return factory


_BUILDERS = {
    "nt_xent": _two_views(CF.nt_xent, temperature=TAU),
    "dcl": _two_views(CF.dcl, temperature=TAU),
    "dclw": _two_views(CF.dclw, temperature=TAU),
    "supcon": _supcon,
    "cwcl": _cwcl,
    "siglip": _two_modalities(CF.siglip, scale=10.0, bias=-10.0),
    "multiple_negatives_ranking": _mnrl,
    "debiased_info_nce": _two_views(CF.debiased_info_nce, temperature=0.5),
    "hard_negative_info_nce": _two_views(CF.hard_negative_info_nce, temperature=0.5),
    "in_batch_kl_distillation": _kl,
    "clip_align_uniform": _two_modalities(CF.clip_align_uniform, temperature=0.01),
    "matryoshka": _matryoshka,
    "mixup_contrastive": _mixup,
    "info_nce_with_negatives": _with_negatives,
    "sbcl": _sbcl,
    "team_up": _team_up,
}
CASES: dict[str, Factory] = {}
for _name, _build in _BUILDERS.items():
    CASES[_name] = _build("tiled")
    CASES[_name + "-dense"] = _build("dense")
