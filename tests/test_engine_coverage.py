"""Every engine objective is covered where issue 15 asks for it: it is exact under a process
group (declared so, hence run by the distributed cases: 2 and 4 gloo ranks == one process) and
has a case in the per-objective benchmark runner (benchmarks/bench_objectives.py).

"Engine objective" is measured, not listed: a public functional is one when its numerics case
(tests/test_numerics.py, which covers every public functional) reaches ``engine.contrast``.
Which objectives a benchmark case exercises is measured too: the registered
functionals whose code runs while the case runs (``sys.setprofile``), on small inputs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import contrastkit.engine as engine
import contrastkit.functional as CF
from contrastkit.objective import REGISTRY

ROOT = Path(__file__).resolve().parents[1]


def _code(fn):
    while hasattr(fn, "__wrapped__"):
        fn = fn.__wrapped__
    return getattr(fn, "__code__", None)


CODES = {_code(e.functional): name for name, e in REGISTRY.items() if _code(e.functional)}


def _called(fn) -> set[str]:
    """Registered functionals whose code runs while ``fn()`` runs."""
    seen: set[str] = set()

    def prof(frame, event, arg):
        if event == "call":
            name = CODES.get(frame.f_code)
            if name is not None:
                seen.add(name)

    old = sys.getprofile()
    sys.setprofile(prof)
    try:
        fn()
    finally:
        sys.setprofile(old)
    return seen


@pytest.fixture(scope="module")
def engine_objectives(monkeypatch_module):
    from test_numerics import CASES, ORDER

    hits: list[int] = []
    contrast = engine.contrast

    def counting(*a, **k):
        hits.append(1)
        return contrast(*a, **k)

    monkeypatch_module.setattr(engine, "contrast", counting)
    found = set()
    for name, (build, other, kw) in CASES.items():
        leaves = [x.float().requires_grad_() for x in build()]
        args = ORDER[name](leaves, other) if name in ORDER else [*leaves, *other]
        hits.clear()
        getattr(CF, name)(*args, **kw)
        if hits:
            found.add(name)
    return found


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_the_measurement_finds_engine_objectives(engine_objectives):
    # objectives that certainly sweep the engine, and ones that certainly do not
    assert {"info_nce", "clip", "supcon", "cacr", "mv_info_nce"} <= engine_objectives
    assert not {"dpo", "flops", "batch_hard_triplet", "margin_mse"} & engine_objectives


def test_every_engine_objective_is_exact_under_a_group(engine_objectives):
    """Declared exact, so tests/test_objective_kit.py requires a distributed case for it (2
    ranks in tests/test_distributed.py, 4 in tests/test_distributed_four.py)."""
    local = sorted(n for n in engine_objectives if not REGISTRY[n].functional.exact_under_group)
    assert not local, f"engine objectives still rank-local under a process group: {local}"


def test_every_engine_objective_has_a_benchmark_case(engine_objectives):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import bench_objectives
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    covered: set[str] = set()
    for family, case in bench_objectives.cases():
        build = sys.modules[family].CASES[case]
        fn = build(64, 8, torch.Generator().manual_seed(0))
        covered |= _called(fn)
    missing = sorted(engine_objectives - covered)
    assert not missing, f"engine objectives without a bench_objectives case: {missing}"
