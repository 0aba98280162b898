"""contrastkit.distributed: 2 and 4 gloo processes on CPU == one process on the concatenated batch.

Each worker builds the same global inputs from a seed, keeps its rank-major shard, computes the
loss under the group and backpropagates; the parent compares every rank's loss, the concatenated
shard gradients and the shared temperature / scale gradients with the single-process result.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch.overrides import TorchFunctionMode

import contrastkit as ck
from contrastkit import distributed as ckd

from distributed_cases import CASES as FAMILY_CASES

ROOT = Path(__file__).resolve().parents[1]
N, D = 5, 8  # rows per rank, dimension
TOL = dict(rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------------
# cases: (global inputs) -> loss; "rows" = tensors sharded by rank along dim 0,
# "shared" = 0-dim tensors every rank holds (temperature, scale, bias)


def _rand(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def make_case(name: str, world: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n = N * world
    t = torch.tensor(0.2, dtype=torch.float64)
    if name in ("info_nce", "info_nce_sum", "info_nce_none", "info_nce_tiled"):
        rows, shared = [_rand(g, n, D), _rand(g, n, D)], [t]
    elif name in ("info_nce_rowtemp", "info_nce_sym_rowtemp"):  # per-anchor: a per-row input
        rows, shared = [_rand(g, n, D), _rand(g, n, D), 0.1 + torch.rand(n, generator=g)], []
        rows[2] = rows[2].double()
    elif name == "info_nce_fp32":
        rows, shared = [_rand(g, n, D).float(), _rand(g, n, D).float()], [t.float()]
    elif name == "info_nce_private":
        rows, shared = [_rand(g, n, D), _rand(g, n, D), _rand(g, n, 3, D)], [t]
    elif name in ("info_nce_sym", "info_nce_sym_tiled", "clip"):
        rows, shared = [_rand(g, n, D), _rand(g, n, D)], [torch.tensor(0.7, dtype=torch.float64)]
    elif name == "mnrl":
        rows, shared = [_rand(g, n, D), _rand(g, n, D), _rand(g, n, D)], []
    elif name == "two_sided_masked":  # global columns: excluded (2 per row, -1 unused), positive
        # index masks are given in local columns (-1 = unused), so excluded columns are the
        # row's own rank's; the positive may be any rank's candidate
        own = torch.arange(n)[:, None] // N * N
        excl = own + torch.randint(0, N, (n, 2), generator=g)
        excl[::3, 1] = -1
        pos_col = torch.randint(0, n, (n,), generator=g)  # often another rank's candidate
        rows, shared = [_rand(g, n, D), _rand(g, n, D), excl, pos_col], [t]
    elif name in ("nt_xent", "nt_xent_tiled", "dcl", "dcl_tiled", "dclw", "debiased", "hcl"):
        rows, shared = [_rand(g, n, D), _rand(g, n, D)], [t]
    elif name in ("supcon", "supcon_tiled", "supcon_one"):
        labels = torch.randint(0, 3, (n,), generator=g)
        labels[0] = 50  # a singleton class (no positive in one view-less mode)
        rows, shared = [_rand(g, n, 2, D), labels], [t]
    elif name == "supcon_nolabels":
        rows, shared = [_rand(g, n, 2, D)], [t]
    elif name == "cwcl":
        rows, shared = [_rand(g, n, D), _rand(g, n, D), _rand(g, n, 4)], [t]
    elif name == "siglip":
        rows = [_rand(g, n, D), _rand(g, n, D)]
        shared = [torch.tensor(3.0, dtype=torch.float64), torch.tensor(-2.0, dtype=torch.float64)]
    elif name in FAMILY_CASES:
        rows, shared = FAMILY_CASES[name][0](g, n, D)
    else:
        raise KeyError(name)
    return rows, shared


def call_case(name, rows, shared):
    tiled = {"backend": "tiled", "chunk_size": 3}
    if name == "info_nce":
        return ck.info_nce(rows[0], rows[1], temperature=shared[0])
    if name == "info_nce_tiled":
        return ck.info_nce(rows[0], rows[1], temperature=shared[0], **tiled)
    if name == "info_nce_sum":
        return ck.info_nce(rows[0], rows[1], temperature=shared[0], reduction="sum")
    if name == "info_nce_none":
        return ck.info_nce(rows[0], rows[1], temperature=shared[0], reduction="none")
    if name == "info_nce_rowtemp":
        return ck.info_nce(rows[0], rows[1], temperature=rows[2], **tiled)
    if name == "info_nce_fp32":
        return ck.InfoNCE(temperature=shared[0], backend="tiled", chunk_size=4)(rows[0], rows[1])
    if name == "info_nce_private":
        return ck.info_nce(rows[0], rows[1], rows[2], temperature=shared[0], **tiled)
    if name == "info_nce_sym_rowtemp":  # two-sided: the single sweep takes per-row kappa
        return ck.info_nce(rows[0], rows[1], temperature=rows[2], symmetric=True, **tiled)
    if name == "info_nce_sym":
        return ck.info_nce(rows[0], rows[1], temperature=shared[0], symmetric=True)
    if name == "info_nce_sym_tiled":
        return ck.info_nce(rows[0], rows[1], temperature=shared[0], symmetric=True, **tiled)
    if name == "clip":  # shared[0] plays open_clip's logit_scale t' (scale = exp(t'))
        return ck.clip_loss(rows[0], rows[1], scale=shared[0].exp() * 4, **tiled)
    if name == "mnrl":
        return ck.multiple_negatives_ranking(rows[0], rows[1], rows[2])
    if name == "two_sided_masked":
        return masked_two_sided(*rows, temperature=shared[0])
    if name == "nt_xent":
        return ck.nt_xent(rows[0], rows[1], temperature=shared[0])
    if name == "nt_xent_tiled":
        return ck.nt_xent(rows[0], rows[1], temperature=shared[0], **tiled)
    if name == "dcl":
        return ck.dcl(rows[0], rows[1], temperature=shared[0])
    if name == "dcl_tiled":
        return ck.dcl(rows[0], rows[1], temperature=shared[0], **tiled)
    if name == "dclw":
        return ck.dclw(rows[0], rows[1], temperature=shared[0], detach_weights=False)
    if name == "debiased":
        return ck.debiased_info_nce(rows[0], rows[1], temperature=shared[0], **tiled)
    if name == "hcl":
        return ck.hard_negative_info_nce(rows[0], rows[1], temperature=shared[0], **tiled)
    if name == "supcon":
        return ck.supcon(rows[0], rows[1], temperature=shared[0])
    if name == "supcon_tiled":
        return ck.supcon(rows[0], rows[1], temperature=shared[0], **tiled)
    if name == "supcon_one":
        return ck.supcon(rows[0], rows[1], temperature=shared[0], contrast_mode="one")
    if name == "supcon_nolabels":
        return ck.supcon(rows[0], temperature=shared[0])
    if name == "cwcl":
        return ck.cwcl(rows[0], rows[1], rows[2], temperature=shared[0], **tiled)
    if name == "siglip":
        return ck.siglip_loss(rows[0], rows[1], scale=shared[0], bias=shared[1], **tiled)
    if name in FAMILY_CASES:
        return FAMILY_CASES[name][1](rows, shared)
    raise KeyError(name)


@ckd.exact_objective
def masked_two_sided(q, k, excl, pos_col, temperature):
    """A two-sided plain spec with every sparse exclusion and a positive (none of the library's
    symmetric objectives has them): ``(mean_i ce_i + mean_j (col_lse_j - u_jj)) / 2`` where row
    ``i`` excludes its own column and the columns ``excl[i]`` from its log-sum-exp and
    ``ce_i = lse_i - u_i,pos_col(i)``; ``excl``/``pos_col`` hold global columns (made local
    here: the engine's masks are in local columns)."""
    from contrastkit.engine import LSETerm, PairMask, RowSpec
    from contrastkit.objective import kappa, objective_group, row_offset, row_weight, run

    group = objective_group()
    n = q.shape[0]
    off = row_offset(n, group=group)
    w = row_weight("mean", n, group=group) / 2
    kk = kappa(q, temperature, None, n_rows=n, group=group)
    spec = RowSpec(
        terms=(LSETerm(exclude=PairMask(self_offset=0, index=excl.where(excl < 0, excl - off))),),
        row_fn=lambda st, sd: w * st.ce,
        positive=pos_col - off,
        columns=True,
        col_fn=lambda st, sd: w * (st.lse - sd["pos"]),
        col_side={"pos": (q * k).sum(-1) * kk},
    )
    return run(q, k, spec, kk, "mean", {"chunk_size": 3, "backend": "tiled"}, group=group)


FAST = [
    "info_nce",
    "info_nce_tiled",
    "info_nce_sum",
    "info_nce_none",
    "info_nce_sym_tiled",
    "clip",
    "nt_xent_tiled",
    "dcl_tiled",
    "supcon",
    "supcon_tiled",
    "cwcl",
]
DDP_CASES = ["info_nce_sym_tiled", "supcon", "info_nce_none"]
RING_CASES = [
    "info_nce",
    "info_nce_none",
    "info_nce_private",
    "clip",
    "mnrl",
    "nt_xent_tiled",
    "dcl",
    "dclw",
    "hcl",
    "supcon_tiled",
    "siglip",
    "cwcl",
]
MORE = [
    "info_nce_rowtemp",
    "info_nce_fp32",
    "info_nce_private",
    "info_nce_sym",
    "info_nce_sym_rowtemp",
    "two_sided_masked",
    "mnrl",
    "nt_xent",
    "dcl",
    "dclw",
    "debiased",
    "hcl",
    "supcon_one",
    "supcon_nolabels",
    "siglip",
]


def _leaves(rows, shared):
    rows = [r.clone().requires_grad_() if r.is_floating_point() else r for r in rows]
    shared = [s.clone().requires_grad_() for s in shared]
    return rows, shared


# ------------------------------------------------------------------------------------------
# workers


def _init(rank, world, rdzv):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{rdzv}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=30),
    )
    return dist


def _shard(rows, rank, world):
    return [r.chunk(world)[rank] for r in rows]


def _run_cases(rank, world, names, gradients, strategy="gather"):
    res = {}
    for name in names:
        rows, shared = make_case(name, world)
        rows, shared = _leaves(_shard(rows, rank, world), shared)
        try:
            with ckd.group("world", gradients=gradients, strategy=strategy):
                loss = call_case(name, rows, shared)
            if loss.dim():  # reduction="none": weight the global rows
                loss_w = loss * _row_weights(N * world).chunk(world)[rank]
                loss_w.sum().backward()
            else:
                loss.backward()
            res[name] = (
                loss.detach(),
                [r.grad for r in rows if r.is_floating_point()],
                [s.grad for s in shared],
            )
        except ValueError as e:
            res[name] = str(e)
    return res


def _worker(rank, world, rdzv, out, names, sections=()):
    dist = _init(rank, world, rdzv)
    res = {"exact": _run_cases(rank, world, names, "exact")}
    if "ddp" in sections:
        res["ddp"] = _run_cases(rank, world, DDP_CASES, "ddp")
    if "ring" in sections:
        res["ring"] = _run_cases(rank, world, RING_CASES, "exact", "ring")
    if "misc" in sections:
        res["misc"] = _misc(rank, world)
    if "ddp_model" in sections:
        res["ddp_model"] = _ddp_model(rank, world)
    if "flops" in sections:
        res["flops"] = _flops(rank, world)
    torch.save(res, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


def _misc(rank, world):
    res = {}
    g = torch.Generator().manual_seed(rank)
    n = N + (1 if rank == world - 1 else 0)  # the last rank has a larger batch
    try:
        ck.info_nce(_rand(g, n, D), _rand(g, n, D))
    except ValueError as e:
        res["batch"] = str(e)
    d = D + (1 if rank == 0 else 0)  # rank 0 has a different dimension
    try:
        ck.nt_xent(_rand(g, N, d), _rand(g, N, d))
    except ValueError as e:
        res["dim"] = str(e)
    try:
        ck.supcon(_rand(g, n, 2, D), torch.zeros(n, dtype=torch.long))
    except ValueError as e:
        res["labels"] = str(e)
    try:
        ck.supcon(_rand(g, N, 2, d), torch.zeros(N, dtype=torch.long))
    except ValueError as e:
        res["labels_dim"] = str(e)
    try:  # soft targets need the gathered candidates' tiles: the ring refuses them
        with ckd.group("world", strategy="ring"):
            ck.in_batch_kl_distillation(
                _rand(g, N, D), _rand(g, N, D), _rand(g, N, D + 1), _rand(g, N, D + 1)
            )
    except ValueError as e:
        res["soft_ring"] = str(e)
    # a declared objective whose rows need no other rank (global_total)
    from contrastkit.objective import global_total, objective_group, row_weight

    @ckd.exact_objective
    def mean_of(v):
        group = objective_group()
        return global_total((v * row_weight("mean", v.shape[0], group=group)).sum(), group=group)

    v = torch.full((3,), float(rank + 1), requires_grad=True)
    with ckd.group("world", gradients="ddp"):
        total = mean_of(v)
    total.backward()
    res["global_total"] = (total.detach(), v.grad)
    # the module wrapper == the context manager
    x, y = _rand(g, N, D), _rand(g, N, D)
    with ckd.group("world"):
        plain = ck.nt_xent(x, y, temperature=0.3)
    wrapped = ckd.DistributedLoss(ck.NTXent(temperature=0.3))(x, y)
    res["wrapper"] = (
        plain,
        wrapped,
        ckd.DistributedLoss(ck.NTXent(temperature=0.3), pg=None)(x, y),
    )
    # opting out: a per-rank loss, no communication
    x, y = _rand(g, N, D), _rand(g, N, D)
    with ckd.local():
        res["local"] = (ck.info_nce(x, y), ck.info_nce(x, y, backend="dense"))
    # all_gather_with_grad: rank-major, gradient = sum over ranks
    z = torch.full((2, 3), float(rank), requires_grad=True)
    zz = ckd.all_gather_with_grad(z)
    (zz * torch.arange(zz.shape[0], dtype=zz.dtype)[:, None]).sum().backward()
    res["gather"] = (zz.detach(), z.grad)
    # bytes per step (InfoNCE, one-sided; float64)
    q, k = _rand(g, N, D).requires_grad_(), _rand(g, N, D).requires_grad_()
    with ckd.CommCounter() as c:
        ck.info_nce(q, k).backward()
    res["bytes"] = (dict(c.bytes), dict(c.calls))
    with ckd.CommCounter() as c:
        ck.clip_loss(q, k, scale=torch.tensor(10.0, requires_grad=True)).backward()
    res["bytes_clip"] = (dict(c.bytes), dict(c.calls))
    with _two_pass(), ckd.CommCounter() as c:
        ck.clip_loss(q, k, scale=torch.tensor(10.0, requires_grad=True)).backward()
    res["bytes_clip_two_pass"] = (dict(c.bytes), dict(c.calls))
    with ckd.group("world", strategy="ring"), ckd.CommCounter() as c:
        ck.info_nce(q, k).backward()
    res["bytes_ring"] = (dict(c.bytes), dict(c.calls))
    return res


class GemmFlops(TorchFunctionMode):
    """Counts the FLOPs of the matrix products (``2 m k n``; ``mm``, ``addmm``, ``addmm_``,
    ``matmul`` of matrices) called inside the block. The engine's single sweep computes every
    gradient product in its forward (backward only scales), so all of them are seen here
    (a TorchDispatchMode would also see autograd's, but its first use imports torch._dynamo,
    seconds)."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in ("mm", "matmul", "__matmul__"):
            a, b = args[:2]
        elif name in ("addmm", "addmm_"):
            a, b = args[1:3]
        else:
            a = b = None
        if a is not None and a.dim() == 2 and b.dim() == 2:
            self.flops += 2 * a.shape[0] * a.shape[1] * b.shape[1]
        return func(*args, **(kwargs or {}))


FLOP_ROWS = 12  # anchors per rank of the FLOP count (the engine's tiles: chunk_size=4)


def flop_case(name, rows, scale):
    kw = {"backend": "tiled", "chunk_size": 4}
    if name == "info_nce_sym":
        return ck.info_nce(rows[0], rows[1], temperature=0.2, symmetric=True, **kw)
    return ck.clip_loss(rows[0], rows[1], scale=scale, **kw)


def _flops(rank, world):
    """GEMM FLOPs of one symmetric step (forward + backward) on this rank, on the single-sweep
    route and on the two-pass route."""
    res = {}
    for name in ("info_nce_sym", "clip"):
        g = torch.Generator().manual_seed(3)
        rows = [_rand(g, FLOP_ROWS * world, D).chunk(world)[rank] for _ in range(2)]
        for route in ("single", "two-pass"):
            leaves = [r.clone().requires_grad_() for r in rows]
            scale = torch.tensor(5.0, dtype=torch.float64, requires_grad=True)
            ctx = _two_pass() if route == "two-pass" else contextlib.nullcontext()
            with ctx, GemmFlops() as fc, ckd.group("world", gradients="exact"):
                loss = flop_case(name, leaves, scale)
                loss.backward()
            res[name, route] = (fc.flops, loss.detach(), [x.grad for x in leaves], scale.grad)
    return res


@contextlib.contextmanager
def _two_pass():
    """Plain two-sided specs on the two-pass route (both sides gathered) instead of the single
    sweep with column statistics combined across ranks."""
    from contrastkit.distributed import _run

    _run.SYMMETRIC_ROUTE = "two-pass"
    try:
        yield
    finally:
        _run.SYMMETRIC_ROUTE = "single"


def _ddp_model(rank, world):
    from torch.nn.parallel import DistributedDataParallel as DDP

    x, y, model, loss_fn = _ddp_setup(world)
    ddp = DDP(model)
    xs, ys = x.chunk(world)[rank], y.chunk(world)[rank]
    emb = ddp(torch.cat([xs, ys]))  # one forward per step, as DDP expects
    loss = loss_fn(emb[:N], emb[N:])  # default: world group, gradients="ddp"
    loss.backward()
    res = {
        "loss": loss.detach(),
        "params": [p.grad.clone() for p in model.parameters()],
        "scale": loss_fn.logit_scale.grad.clone(),
    }
    return res


def _ddp_setup(world):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 8))
    model = model.double()
    loss_fn = ck.CLIPLoss(backend="tiled", chunk_size=4).double()
    g = torch.Generator().manual_seed(1)
    return _rand(g, N * world, 6), _rand(g, N * world, 6), model, loss_fn


def _spawn(fn, world, *args, timeout=90.0):
    with tempfile.TemporaryDirectory() as tmp:
        rdzv = os.path.join(tmp, "rdzv")
        ctx = mp.start_processes(
            fn, args=(world, rdzv, tmp) + args, nprocs=world, join=False, start_method="spawn"
        )
        deadline = time.monotonic() + timeout
        while not ctx.join(timeout=1.0):
            if time.monotonic() > deadline:
                for p in ctx.processes:
                    p.kill()
                pytest.fail(f"{world} processes did not finish within {timeout} s (a hang)")
        return [torch.load(os.path.join(tmp, f"rank{r}.pt")) for r in range(world)]


# ------------------------------------------------------------------------------------------
# tests


def _row_weights(n):
    return torch.linspace(0.5, 1.5, n, dtype=torch.float64)


def single_process(name, world):
    rows, shared = _leaves(*make_case(name, world))
    with ckd.local():
        loss = call_case(name, rows, shared)
    (loss * _row_weights(loss.shape[0]) if loss.dim() else loss).sum().backward()
    return (
        loss.detach(),
        [r.grad for r in rows if r.is_floating_point()],
        [s.grad for s in shared],
    )


def _compare(results, names, world, grad_factor=1.0):
    for name in names:
        want_loss, want_rows, want_shared = single_process(name, world)
        for r, res in enumerate(results):
            got = res[name]
            assert not isinstance(got, str), f"{name} rank {r}: {got}"
            if want_loss.dim():  # per-row losses: this rank's rows
                want_r = want_loss.chunk(world)[r]
                torch.testing.assert_close(got[0], want_r, **TOL, msg=f"{name} rows rank {r}")
            else:  # the global loss on every rank
                torch.testing.assert_close(got[0], want_loss, **TOL, msg=f"{name} loss rank {r}")
            for i, s in enumerate(want_shared):
                torch.testing.assert_close(got[2][i], s, **TOL, msg=f"{name} shared grad {i}")
        for i, w in enumerate(want_rows):
            if w is None:  # no gradient flows there (CWCL's frozen side)
                assert all(res[name][1][i] is None for res in results), name
                continue
            g = torch.cat([res[name][1][i] for res in results]) / grad_factor
            torch.testing.assert_close(g, w, **TOL, msg=f"{name} input {i} grad")


FAMILY = list(FAMILY_CASES)


@pytest.fixture(scope="module")
def two():
    """One 2-process run for every fast check (process start-up dominates the runtime)."""
    return _spawn(_worker, 2, FAST + MORE + FAMILY, ("ddp", "ring", "misc", "ddp_model", "flops"))


@pytest.mark.parametrize("name", FAST + MORE + FAMILY)
def test_two_processes_match_single_process(two, name):
    _compare([res["exact"] for res in two], [name], 2)


@pytest.mark.slow
def test_four_processes_match_single_process():
    names = [
        "info_nce",
        "info_nce_sym_tiled",
        "clip",
        "nt_xent_tiled",
        "dcl",
        "supcon_tiled",
        "cwcl",
    ]
    results = _spawn(_worker, 4, names, ("ring",))
    _compare([res["exact"] for res in results], names, 4)
    _compare([res["ring"] for res in results], RING_CASES, 4)


@pytest.mark.parametrize("name", RING_CASES)
def test_ring_strategy_matches_single_process(two, name):
    _compare([res["ring"] for res in two], [name], 2)


def test_ddp_gradient_convention_scales_inputs_by_world_size(two):
    """gradients="ddp": inputs receive world x their exact gradient, shared tensors exact."""
    _compare([res["ddp"] for res in two], DDP_CASES, 2, grad_factor=2.0)


def test_ddp_step_equals_single_process_step(two):
    """A tiny encoder in DDP: the DDP-averaged parameter gradients and the logit scale's
    gradient equal those of one process on the concatenated batch."""
    world = 2
    x, y, model, loss_fn = _ddp_setup(world)
    with ckd.local():
        loss = loss_fn(model(x), model(y))
    loss.backward()
    assert loss_fn.logit_scale.grad is not None
    for res in two:
        res = res["ddp_model"]
        torch.testing.assert_close(res["loss"], loss.detach(), **TOL)
        for got, p in zip(res["params"], model.parameters()):
            torch.testing.assert_close(got, p.grad, **TOL)
        torch.testing.assert_close(res["scale"], loss_fn.logit_scale.grad, **TOL)


@pytest.mark.parametrize("name", ["info_nce_sym", "clip"])
def test_symmetric_step_flops_across_ranks_equal_one_process(two, name):
    """A two-sided plain objective (single sweep with column statistics combined across ranks)
    costs 8 N M d GEMM FLOPs summed over the ranks, as one process on the global batch (the
    column LSE sweep 2, the sweep 2, dA and dB 2 each); the two-pass route costs 2 x 6 N M d.
    Values and gradients of both routes equal one process."""
    world = 2
    n = FLOP_ROWS * world  # N = M = n globally
    g = torch.Generator().manual_seed(3)
    rows = [_rand(g, n, D).requires_grad_() for _ in range(2)]
    scale = torch.tensor(5.0, dtype=torch.float64, requires_grad=True)
    with GemmFlops() as fc:
        loss = flop_case(name, rows, scale)
        loss.backward()
    assert fc.flops == 8 * n * n * D
    for route, factor in (("single", 8), ("two-pass", 12)):
        got = [res["flops"][name, route] for res in two]
        assert sum(r[0] for r in got) == factor * n * n * D, (route, [r[0] for r in got])
        for _flops_r, value, _grads, sgrad in got:
            torch.testing.assert_close(value, loss.detach(), **TOL)
            if name == "clip":
                torch.testing.assert_close(sgrad, scale.grad, **TOL)
        for i, x in enumerate(rows):
            torch.testing.assert_close(torch.cat([r[2][i] for r in got]), x.grad, **TOL)


def test_mismatched_ranks_fail_everywhere_and_collectives(two):
    world = 2
    for r, res in enumerate(two):
        res = res["misc"]
        assert "same shape" in res["batch"] and f"({N + 1}, {D})" in res["batch"], res["batch"]
        assert "same shape" in res["dim"] and f"({2 * N}, {D + 1})" in res["dim"], res["dim"]
        assert "same shape" in res["labels"], res["labels"]
        assert "same shape" in res["labels_dim"] and "class sums" in res["labels_dim"]
        assert "not supported under a torch.distributed" in res["soft_ring"], res["soft_ring"]
        assert "local()" in res["soft_ring"]
        total, vgrad = res["global_total"]  # mean over 3 W rows of (rank + 1), ddp scaling
        torch.testing.assert_close(total, torch.tensor(sum(range(1, world + 1)) / world))
        torch.testing.assert_close(vgrad, torch.full((3,), world / (3.0 * world)))
        plain, wrapped, local = res["wrapper"]
        torch.testing.assert_close(wrapped, plain)
        assert not torch.allclose(local, plain)  # the per-rank loss differs from the global one
        # local(): the per-rank loss, identical to the plain computation
        torch.testing.assert_close(res["local"][0], res["local"][1])
        zz, zgrad = res["gather"]
        want = torch.arange(world, dtype=torch.float32).repeat_interleave(2)[:, None]
        torch.testing.assert_close(zz, want.expand(2 * world, 3))
        # loss on every rank = sum_i i * zz_i, so rank r's rows get world * (their indices)
        want = world * torch.arange(2 * r, 2 * r + 2, dtype=torch.float32)[:, None].expand(2, 3)
        torch.testing.assert_close(zgrad, want)
        # bytes: one all-gather of the candidates, one reduce-scatter of their gradient
        nbytes, calls = res["bytes"]
        payload = (world - 1) * N * D * 8
        assert nbytes["reduce_scatter"] == payload and calls["reduce_scatter"] == 1
        # two exchanges (the global row count, the shapes), each one fixed-size record per rank
        meta = 2 * (world - 1) * ckd._ops._WIDTH * 8
        assert nbytes["all_gather"] == payload + meta and calls["all_gather"] == 3
        # symmetric (CLIP, M = N candidates per rank): one side gathered and scattered, plus the
        # column statistics: the partial column LSEs of all W M columns combined by two
        # all-reduces (max, then sum of exponentials: 2 x 2 (W - 1) / W x W M 8 bytes) and the
        # column coefficients of this rank's M columns all-gathered ((W - 1) M 8 bytes); the
        # loss and the logit scale's gradient are one all-reduced scalar each
        nbytes, calls = res["bytes_clip"]
        col_stats = 2 * 2 * (world - 1) * N * 8
        scalars = 2 * round(2 * (world - 1) / world * 8)
        assert nbytes["reduce_scatter"] == payload and calls["reduce_scatter"] == 1
        assert nbytes["all_gather"] == payload + meta + (world - 1) * N * 8
        assert calls["all_gather"] == 4
        assert nbytes["all_reduce"] == col_stats + scalars and calls["all_reduce"] == 4
        # the same step on the two-pass route: both sides gathered and scattered
        nbytes, calls = res["bytes_clip_two_pass"]
        assert nbytes["reduce_scatter"] == 2 * payload
        assert nbytes["all_gather"] == 2 * payload + meta
        assert nbytes["all_reduce"] == scalars
        # ring: shards forward (W - 1), shards + gradient accumulators back (W - 1), one hop home
        nbytes, calls = res["bytes_ring"]
        shard = N * D * 8
        assert nbytes["ring"] == (3 * world - 2) * shard
        assert nbytes["reduce_scatter"] == 0 and nbytes["all_gather"] == meta


def _agreement_worker(rank, world, rdzv, out):
    """Options that differ across ranks, and an input error on one rank only: every rank must
    raise a ValueError together (the process group's timeout is 30 s)."""
    dist = _init(rank, world, rdzv)
    g = torch.Generator().manual_seed(0)
    q, k = _rand(g, N, D), _rand(g, N, D)
    bad = q.clone()
    if rank == 1:
        bad[2, 3] = float("nan")
    labels = torch.arange(N) % 2
    feats = _rand(g, N, 2, D)
    calls = {
        "temperature": lambda: ck.info_nce(q, k, temperature=0.1 if rank == 0 else 0.2),
        "temperature_module": lambda: ck.InfoNCE(temperature=0.05 * (rank + 1))(q, k),
        "temperature_tensor": lambda: ck.info_nce(q, k, temperature=torch.tensor(0.1 + rank)),
        "symmetric": lambda: ck.info_nce(q, k, symmetric=rank == 1),
        "labels_none": lambda: ck.supcon(feats, labels if rank == 1 else None),
        "reduction": lambda: ck.nt_xent(q, k, reduction="sum" if rank else "mean"),
        "nan_block": lambda: _in_group(lambda: ck.info_nce(bad, k)),
        "nan_module": lambda: ck.InfoNCE()(bad, k),
        "nan_wrapper": lambda: ckd.DistributedLoss(ck.NTXent())(bad, k),
        "labels": lambda: ck.SupCon()(feats, labels.float() if rank == 1 else labels),
        # bare functional calls under the default (world) group, no group() block
        "nan_bare": lambda: ck.info_nce(bad, k),
        "nan_bare_clip": lambda: ck.clip_loss(bad, k),
        "labels_bare": lambda: ck.supcon(feats, labels.float() if rank == 1 else labels),
        "ok": lambda: ck.info_nce(q, k),  # the group still works after all of the above
    }
    if world == 2:
        calls["strategy"] = lambda: _in_group(
            lambda: ck.info_nce(q, k), strategy="ring" if rank else "gather"
        )
    res = {}
    for name, fn in calls.items():
        t0 = time.monotonic()
        try:
            res[name] = fn()
        except ValueError as e:
            res[name] = str(e)
        res[name + "_s"] = time.monotonic() - t0
    torch.save(res, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


def _in_group(fn, **kw):
    with ckd.group("world", **kw):
        return fn()


@pytest.mark.slow
def test_option_mismatch_and_one_rank_input_error_raise_on_every_rank():
    t0 = time.monotonic()
    results = _spawn(_agreement_worker, 2, timeout=60.0)
    assert time.monotonic() - t0 < 25.0  # well before the 30 s process-group timeout
    for r, res in enumerate(results):
        for name in [n for n in res if n.endswith("_s")]:
            assert res[name] < 10.0, (r, name, res[name])
        for name, option, values in [
            ("temperature", "'temperature'", "rank 0: 0.1, rank 1: 0.2"),
            ("temperature_module", "'temperature'", "rank 0: 0.05, rank 1: 0.1"),
            ("temperature_tensor", "'temperature'", "rank 0: 0.1, rank 1: 1.1"),
            ("symmetric", "'symmetric'", "rank 0: False, rank 1: True"),
            ("labels_none", "'labels'", "rank 0: None"),
            ("reduction", "'reduction'", "rank 0: 'mean', rank 1: 'sum'"),
            ("strategy", "'strategy'", "rank 0: 'gather', rank 1: 'ring'"),
        ]:
            msg = res[name]
            assert isinstance(msg, str), (r, name, msg)
            assert f"option {option}" in msg and "same on every rank" in msg, (r, name, msg)
            assert values in msg, (r, name, msg)
        for name, own in [
            ("nan_block", "query contains 1 NaN"),
            ("nan_module", "query contains 1 NaN"),
            ("nan_wrapper", "z1 contains 1 NaN"),
            ("labels", "integer class ids"),
            ("nan_bare", "query contains 1 NaN"),
            ("nan_bare_clip", "contains 1 NaN"),
            ("labels_bare", "integer class ids"),
        ]:
            msg = res[name]
            assert isinstance(msg, str), (r, name, msg)
            if r == 1:  # the rank with the bad input raises its own error
                assert own in msg and "failed its input checks" not in msg, (r, name, msg)
            else:  # the others name that rank and its error
                assert "rank 1 of the process group failed its input checks" in msg, msg
                assert own in msg, (r, name, msg)
        assert not isinstance(res["ok"], str), res["ok"]
    torch.testing.assert_close(results[0]["ok"], results[1]["ok"])


def test_no_group_is_the_plain_code_path():
    assert ckd.current() is None
    g = torch.Generator().manual_seed(0)
    q, k = _rand(g, 6, 4), _rand(g, 6, 4)
    with ckd.CommCounter() as c:
        ck.info_nce(q, k)
    assert c.total == 0
    with pytest.raises(ValueError, match="not initialised"):
        with ckd.group("world"):
            pass
    with pytest.raises(ValueError, match="gradients"):
        ckd.DistributedLoss(ck.InfoNCE(), gradients="mean")


@pytest.mark.slow
def test_torchrun_example_matches_one_process():
    """examples/distributed_torchrun.py under torchrun: 3 DDP steps == 3 single-process steps."""
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc-per-node", "2"]
    cmd += [str(ROOT / "examples" / "distributed_torchrun.py"), "--check"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "check ok" in out.stdout, out.stdout
