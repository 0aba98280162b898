"""The objective layer's rules, checked over the whole catalogue (contrastkit.objective.registry).

* naming: a functional and its module twin share a stem, no ``Loss`` suffix; earlier names are
  aliases of the same objects and still import from ``contrastkit``, ``contrastkit.losses`` and
  ``contrastkit.functional`` (which is generated from the registry);
* exactness: every objective is declared exact under a process group (and then one of the
  distributed test cases runs it) or rank-local (and then it raises under a group unless the
  caller opts into a per-rank loss with ``contrastkit.distributed.local()``);
* one module base: stateless twins are generated from their functional's signature;
* docstrings are manuals: explanation, formula, Args, Inputs, an Example that runs, See also and
  References with arXiv ids or DOIs; nothing in the sources points to documents outside the
  repository;
* packages that build inputs (negatives, positives, memory, views) never import the losses.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from pathlib import Path

import pytest
import torch

import contrastkit as ck
import contrastkit.functional as CF
import contrastkit.losses as CL
from contrastkit.distributed import _ops
from contrastkit.objective import Objective, ScaledObjective, entries
from contrastkit.objective.registry import names

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "contrastkit"
FAMILIES = (
    "infonce",
    "weighting",
    "multiview",
    "margin",
    "structured",
    "shaping",
    "distillation",
    "ranking",
    "compositional",
    "preference",
    "sparse",
    "dense",
)
ENTRIES = entries()
IDS = [e.name for e in ENTRIES]


def test_every_family_registers_and_has_its_docs_page_and_test_file():
    assert {e.family for e in ENTRIES} == set(FAMILIES)
    for family in FAMILIES:
        assert (SRC / "losses" / family / "__init__.py").is_file()
        assert (ROOT / "docs" / "objectives" / f"{family}.md").is_file(), family
        assert (ROOT / "tests" / f"test_objectives_{family}.py").is_file(), family
    pages = {p.stem for p in (ROOT / "docs" / "objectives").glob("*.md")}
    assert pages == set(FAMILIES), "one docs page per family, named after it"


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_naming_rule_and_aliases(entry):
    fn, mod = entry.functional, entry.module
    if mod is not None:
        assert fn.__name__.replace("_", "") == mod.__name__.lower()
        assert not mod.__name__.endswith("Loss")
        for alias in entry.module_aliases:
            assert getattr(ck, alias) is mod and getattr(CL, alias) is mod
        assert getattr(ck, mod.__name__) is mod
    assert not fn.__name__.endswith("_loss")
    for alias in (fn.__name__, *entry.functional_aliases):
        assert getattr(CF, alias) is fn, alias
        assert getattr(ck, alias) is fn, alias


def test_functional_namespace_is_the_registry():
    published = names(ENTRIES)
    functionals = {n for n, o in published.items() if not inspect.isclass(o)}
    assert functionals <= set(CF.__all__)
    extra = set(CF.__all__) - functionals
    # besides the objectives: the temperature converters and published helpers
    for n in extra:
        assert callable(getattr(CF, n)), n


def test_old_public_names_still_import():
    for n in [
        "InfoNCE", "NTXent", "CLIPLoss", "SigLIPLoss", "DCL", "DCLW", "SupCon", "CWCL",
        "MultipleNegativesRanking", "clip_loss", "siglip_loss", "info_nce", "nt_xent",
        "AlignmentLoss", "UniformityLoss", "alignment_loss", "uniformity_loss", "MLCDLoss",
        "SimCTGLoss", "WhitenedCSELoss", "ICNNLoss", "icnn_loss", "TripletMargin", "LogitScale",
    ]:  # fmt: skip
        assert hasattr(ck, n), n
        assert hasattr(CL, n), n


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_every_objective_declares_its_exactness(entry):
    flag = getattr(entry.functional, "exact_under_group", None)
    assert flag in (True, False), (
        f"{entry.name}: decorate it with exact_objective or rank_local_objective"
    )


class _FakeGroup:
    """An active two-rank group as the objectives see it (no collective is ever reached:
    a rank-local objective raises before it touches its inputs)."""

    def __enter__(self):
        ctx = _ops.Context(group=None, world=2, rank=0, gradients="ddp")
        self.token = _ops._STATE.set(ctx)
        return ctx

    def __exit__(self, *exc):
        _ops._STATE.reset(self.token)


RANK_LOCAL = [e for e in ENTRIES if getattr(e.functional, "exact_under_group", None) is False]


@pytest.mark.parametrize("entry", RANK_LOCAL, ids=[e.name for e in RANK_LOCAL])
def test_rank_local_objectives_raise_under_a_group_and_say_how_to_opt_out(entry):
    with _FakeGroup():
        with pytest.raises(ValueError, match=r"distributed\.local\(\)"):
            entry.functional()
        with ck.distributed.local():
            assert _ops.current() is None  # the opt-out: the objective runs on this rank only


def test_exact_objectives_are_run_by_the_distributed_tests():
    """Every objective declared exact is called by at least one 2-rank case: the cases are run
    here on one process inside a one-rank gloo group, recording which objectives ran."""
    import os
    import subprocess
    import sys

    code = textwrap.dedent(
        """
        import sys, tempfile, os
        sys.path.insert(0, os.path.join(sys.argv[1], "tests"))
        import torch, torch.distributed as dist
        import contrastkit as ck
        from contrastkit.distributed import _ops
        import test_distributed as T
        seen = set()
        real = _ops.shared_errors
        def spy(ctx):  # entered by every exact objective called under a group
            seen.add(_ops.active_objective().name.rsplit(".", 1)[1])
            return real(ctx)
        _ops.shared_errors = spy
        f = tempfile.mktemp()
        dist.init_process_group("gloo", init_method="file://" + f, rank=0, world_size=1)
        names = T.FAST + T.MORE + T.FAMILY
        for name in names:
            rows, shared = T.make_case(name, 1)
            with ck.distributed.group("world", gradients="exact"):
                T.call_case(name, rows, shared)
        dist.destroy_process_group()
        print(" ".join(sorted(seen)))
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert res.returncode == 0, res.stderr[-3000:]
    seen = set(res.stdout.split())
    exact = {e.name for e in ENTRIES if getattr(e.functional, "exact_under_group", None)}
    assert exact - seen == set(), f"exact objectives without a distributed case: {exact - seen}"


# --- module twins --------------------------------------------------------------------------


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.module], ids=lambda e: e.name)
def test_stateless_twins_are_generated_from_their_functional(entry):
    mod = entry.module
    if not issubclass(mod, Objective):
        # a hand-written twin holds state (buffers, a memory, a learnable bias)
        assert issubclass(mod, torch.nn.Module) and inspect.getdoc(mod), mod
        return
    assert mod.functional is entry.functional
    params = inspect.signature(entry.functional).parameters
    kw_only = [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY]
    if issubclass(mod, ScaledObjective):
        kw_only = [n for n in kw_only if n not in ("temperature", "scale")]
    assert list(mod.options) == kw_only
    assert "__init__" not in vars(mod), f"{mod.__name__} forwards its options by hand"
    assert getattr(mod.forward, "generated_from", None) is entry.functional, "hand-written forward"


def test_generated_twin_validates_and_forwards_options():
    with pytest.raises(TypeError, match="unknown option"):
        ck.DCL(tau=0.1)
    with pytest.raises(ValueError, match="temperature"):
        ck.DCL(temperature=-1.0)
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    m = ck.DCL(temperature=0.3)
    torch.testing.assert_close(m(z1, z2), ck.dcl(z1, z2, temperature=0.3))
    torch.testing.assert_close(m(z1, z2, temperature=0.5), ck.dcl(z1, z2, temperature=0.5))
    t = torch.nn.Parameter(torch.tensor(0.2))
    m = ck.DCL(temperature=t)
    assert any(p is t for p in m.parameters())
    assert "temperature" in str(inspect.signature(ck.DCL))


# --- docstrings are manuals ----------------------------------------------------------------

SECTIONS = ("Args:", "Inputs:", "Example::", "See also:", "References:")


def _example(doc: str) -> str:
    m = re.search(r"Example::\n(.*?)(?:\n\S|\n\s*(?:See also|References):|\Z)", doc, re.S)
    assert m, "no Example:: block"
    return textwrap.dedent(m.group(1))


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.module], ids=lambda e: e.name)
def test_module_docstring_is_a_manual(entry):
    doc = inspect.getdoc(entry.module) or ""
    positions = [doc.find(s) for s in SECTIONS]
    assert all(p >= 0 for p in positions), f"{entry.module.__name__} lacks {SECTIONS}"
    assert positions == sorted(positions), "sections in the documented order"
    assert "::" in doc[: positions[0]], "a formula (literal block) before Args"
    refs = doc[doc.find("References:") :]
    assert re.search(r"arXiv:\s?\d{4}\.\d{4,5}|doi\.org/|DOI:?\s?10\.\d+", refs, re.I), refs[:200]
    namespace: dict = {}
    exec(compile(_example(doc), f"<{entry.module.__name__} example>", "exec"), namespace)


FORBIDDEN = re.compile(
    r"method card|\bcard [A-Z]\d|\bcards?\b.*(oracle|section)|\.\./shared|shared/methods|"
    r"sampling_and_evaluation\.md|objectives_catalogue",
    re.I,
)


def test_no_source_refers_to_documents_outside_the_repository():
    bad = []
    for path in SRC.rglob("*.py"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if FORBIDDEN.search(line):
                bad.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not bad, "\n".join(bad)


# --- layering ------------------------------------------------------------------------------


def _imports(path: Path) -> set:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            mod = ("." * node.level) + (node.module or "")
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


@pytest.mark.parametrize("package", ["negatives", "positives", "memory", "views", "engine"])
def test_input_packages_never_import_the_losses(package):
    for path in (SRC / package).rglob("*.py"):
        for mod in _imports(path):
            assert "losses" not in mod.split("."), f"{path.relative_to(ROOT)} imports {mod}"


def test_the_engine_imports_nothing_of_contrastkit_above_it():
    for path in (SRC / "engine").rglob("*.py"):
        depth = len(path.relative_to(SRC / "engine").parts)  # 1: engine/x.py, 2: engine/gpu/x.py
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.level <= depth, f"{path.relative_to(ROOT)} imports {node.module}"
                assert node.level or not (node.module or "").startswith("contrastkit"), path


def test_no_stack_frames_are_read():
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        assert "_getframe" not in text and "inspect.stack" not in text, path


def test_the_architecture_page_example_runs():
    """docs/architecture.md, "Writing an objective": a new objective on the kit, checked there
    against a dense computation."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    m = re.search(r"## Writing an objective.*?```python\n(.*?)```", text, re.S)
    assert m, "the section and its example"
    exec(compile(m.group(1), "<docs/architecture.md example>", "exec"), {})


# --- kit helpers ---------------------------------------------------------------------------


def test_index_dot_equals_the_gathered_product_and_its_gradients(monkeypatch):
    from contrastkit.objective import index_dot, inputs

    monkeypatch.setattr(inputs, "INDEX_DOT_ELEMS", 24)  # blocks of 1 row: every block edge
    g = torch.Generator().manual_seed(0)
    a = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    idx = torch.randint(0, 5, (7, 3), generator=g)
    idx[2] = 1  # one row names the same candidate three times
    want = (a[:, None, :] * b[idx]).sum(-1)
    torch.testing.assert_close(index_dot(a, b, idx), want)
    w = torch.randn(7, 3, generator=g, dtype=torch.float64)
    ga, gb = torch.autograd.grad((index_dot(a, b, idx) * w).sum(), (a, b))
    wa, wb = torch.autograd.grad((want * w).sum(), (a, b))
    torch.testing.assert_close(ga, wa)
    torch.testing.assert_close(gb, wb)
    assert torch.autograd.gradcheck(lambda x, y: index_dot(x, y, idx), (a, b))
    half = index_dot(a.detach().half(), b.detach().half(), idx)
    assert half.dtype == torch.float32  # the compute dtype of fp16 rows
    with pytest.raises(ValueError, match=r"index must have shape \(7, l\)"):
        index_dot(a, b, idx[:3])
