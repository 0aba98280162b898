"""Every public objective, miner and filter rejects bad input with a ValueError/TypeError that
names the argument (issue 11).

The table ``CASES`` gives valid inputs for each public callable of ``contrastkit.functional``,
``contrastkit.losses`` (classes), ``contrastkit.negatives``, ``contrastkit.positives`` and
``contrastkit.memory``; from
each argument's kind the sweep derives bad variants (wrong rank, mismatched rows, NaN, Inf, wrong
dtype, empty, a Python list, out-of-range indices, bad temperatures) and requires an error whose
message contains the argument's name. A public callable that is neither in ``CASES`` nor in
``EXCLUDED`` (with a reason) fails ``test_every_public_callable_is_swept``.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Optional

import pytest
import torch
import torch.nn.functional as F

import contrastkit.functional as CF
import contrastkit.losses as CL
import contrastkit.memory as CM
import contrastkit.negatives as CN
import contrastkit.positives as CP
from contrastkit.objective import REGISTRY, Objective, ScaledObjective


def _canonical(name: str, obj) -> str:
    """The name a registered objective is published under (aliases map to it); ``name``
    for anything else."""
    for e in REGISTRY.values():
        if obj is e.functional:
            return e.name
        if e.module is not None and obj is e.module:
            return e.module.__name__
    return name


N, D = 4, 6
NAN, INF = float("nan"), float("inf")


def g(seed=0):
    return torch.Generator().manual_seed(seed)


def r(*shape, seed=0):
    return torch.randn(*shape, generator=g(seed))


def u(*shape, seed=0):
    return F.normalize(r(*shape, seed=seed), dim=-1)


# ------------------------------------------------------------------ argument kinds and variants


@dataclass
class Arg:
    """How an argument may be broken. ``kind``: "float" (embeddings, scores, logits), "real"
    (real values such as regression targets; integers allowed), "int" (class labels, token ids),
    "index" (indices into ``size`` rows), "temp" (temperature / scale: a number or a tensor),
    "mask" (a bool mask), "views" (a (V, N, d) tensor or a list of (N, d) tensors)."""

    kind: str
    rows: bool = False  # the first dimension is pinned by another argument: dropping a row fails
    size: Optional[int] = None  # "index": the number of rows indexed
    per_row: Optional[int] = None  # "temp": a (per_row,) tensor is valid, another length is not
    neg_ok: bool = False  # "index": -1 is a valid marker (padding)
    empty_ok: bool = False
    extra_dim_ok: bool = False
    list_ok: bool = False
    inf_ok: bool = False  # +-Inf is a meaningful value (NaN never is)
    flat_ok: bool = False  # a 1-D tensor is valid too
    name: Optional[str] = None  # the name the message must hold (default: the argument's)


def _variants(a: Arg, x):
    """(label, bad value) pairs for the valid value ``x`` of an argument of kind ``a``."""
    out = []
    if a.kind == "temp":
        out += [("zero", 0.0), ("negative", -0.5), ("nan", NAN), ("inf", INF)]
        out += [("tensor-zero", torch.tensor(0.0)), ("tensor-nan", torch.tensor(NAN))]
        out += [("wrong-shape", torch.full((N + 3,), 0.1)), ("matrix", torch.full((2, 2), 0.1))]
        out += [("string", "0.1"), ("bool", True)]
        return out
    if a.kind == "views":
        if isinstance(x, torch.Tensor):
            x = list(x.unbind(0))
        out += [("nan", [torch.full(x[0].shape, NAN)] + x[1:])]
        out += [("inf", x[:-1] + [torch.full(x[-1].shape, INF)])]
        if x[0].is_floating_point():
            out += [("int", [v.long() for v in x])]
        else:
            out += [("float", [v.float() for v in x])]
        out += [("rows", [x[0][:-1]] + x[1:])]
        out += [("empty", [v[:0] for v in x]), ("no-views", [])]
        out += [("list", [v.tolist() for v in x]), ("rank", [v[None] for v in x])]
        return out
    if not a.list_ok:
        out.append(("list", x.tolist()))
    if a.kind == "mask":
        out.append(("float-mask", x.float() + 0.5))
    if not a.extra_dim_ok:
        out.append(("extra-dim", x[None]))
    if x.dim() >= 2 and not a.flat_ok:
        out.append(("flat", x.reshape(-1)))
    if a.rows:
        out.append(("rows", x[:-1]))
    if not a.empty_ok:
        out.append(("empty", x[:0]))
    if a.kind in ("float", "real"):
        nan, inf = x.clone().float() if not x.is_floating_point() else x.clone(), None
        nan.view(-1)[0] = NAN
        inf = nan.clone()
        inf.view(-1)[0] = -INF
        out += [("nan", nan), ("complex", x.to(torch.complex64))]
        if not a.inf_ok:
            out.append(("inf", inf))
        if a.kind == "float":
            out.append(("int-dtype", x.round().long()))
    if a.kind in ("int", "index"):
        out.append(("float-dtype", x.float()))
        out.append(("bool-dtype", x.bool()) if a.kind == "index" else ("complex", x.cfloat()))
    if a.kind == "index":
        hi = x.clone()
        hi.view(-1)[0] = a.size
        out.append(("out-of-range", hi))
        lo = x.clone()
        lo.view(-1)[0] = -2 if a.neg_ok else -1
        out.append(("negative", lo))
    return out


@dataclass
class Case:
    call: Callable  # call(values: dict) -> anything
    values: Callable  # () -> dict of valid argument values
    args: dict  # name -> Arg
    skip: dict = field(default_factory=dict)  # (name, variant label) -> reason it is valid


def fn_case(fn, pos, args, kw=None, values=None, skip=None, var=None):
    """A case for ``fn(*[v[p] for p in pos], **{k: v[k]}, **fixed)``; ``var``: a *args name."""
    kw = dict(kw or {})

    def call(v):
        a = [v[p] for p in pos]
        if var is not None:
            a += list(v[var])
        k = {n: v[n] for n in args if n not in pos and n != var}
        return fn(*a, **k, **kw)

    case = Case(call, values, args, dict(skip or {}))
    case.rebuild = lambda other: fn_case(other, pos, args, kw, values, skip, var)
    return case


# ------------------------------------------------------------------ valid inputs


def _temp_fn(head, a, b):
    return torch.full((a.shape[0],), 0.5, dtype=a.dtype)


def _labels():
    return torch.tensor([0, 0, 1, 1])


def _adjacency():
    return torch.eye(N) + torch.diag(torch.ones(N - 1), 1)


def _sogclr_values():
    return dict(z1=r(N, D), z2=r(N, D, seed=1), index=torch.tensor([0, 2, 5, 7]), u=torch.zeros(8))


def _isogclr_values():
    v = _sogclr_values()
    v.update(tau=torch.full((8,), 0.2), grad_tau=torch.zeros(8))
    return v


def _bimodal_values(iso=False):
    v = dict(image=r(N, D), text=r(N, D, seed=1), index=torch.tensor([0, 2, 5, 7]))
    for s in ("u_img", "b_img", "u_txt", "b_txt"):
        v[s] = torch.zeros(8)
    if iso:
        v.update(tau_img=torch.full((8,), 0.02), tau_txt=torch.full((8,), 0.02))
        v.update(grad_tau_img=torch.zeros(8), grad_tau_txt=torch.zeros(8))
    return v


_E = Arg("float")
_ER = Arg("float", rows=True)
_T = Arg("temp")
_TR = Arg("temp", per_row=N)
_L = Arg("int", rows=True)

_STATE = Arg("float", rows=False, extra_dim_ok=False)

CASES: dict[str, Case] = {
    "alignment": fn_case(
        CF.alignment,
        ("x", "y"),
        {"x": _E, "y": _ER},
        values=lambda: dict(x=r(N, D), y=r(N, D, seed=1)),
    ),
    "amcl": fn_case(
        CF.amcl,
        ("z1", "z2"),
        {"z1": _E, "z2": _ER},
        kw={"temperature_fn": _temp_fn},
        values=lambda: dict(z1=r(N, D), z2=r(N, D, seed=1)),
    ),
    "batch_hard_triplet": fn_case(
        CF.batch_hard_triplet,
        ("embeddings", "labels"),
        {"embeddings": _E, "labels": _L},
        values=lambda: dict(embeddings=r(N, D), labels=_labels()),
    ),
    "cacr": fn_case(
        CF.cacr, ("views",), {"views": Arg("views")}, values=lambda: dict(views=r(2, N, D))
    ),
    "clip_align_uniform": fn_case(
        CF.clip_align_uniform,
        ("image", "text"),
        {"image": _E, "text": _ER, "temperature": _T},
        values=lambda: dict(image=r(N, D), text=r(N, D, seed=1), temperature=0.1),
    ),
    "clip": fn_case(
        CF.clip,
        ("image", "text"),
        {"image": _E, "text": _ER, "temperature": _T},
        values=lambda: dict(image=r(N, D), text=r(N, D, seed=1), temperature=0.1),
    ),
    "conr": fn_case(
        CF.conr,
        ("features", "targets", "preds"),
        {
            "features": _E,
            "targets": Arg("real", rows=True),
            "preds": Arg("real", rows=True),
            "temperature": _T,
        },
        values=lambda: dict(
            features=r(N, D),
            targets=torch.tensor([1.0, 1, 2, 3]),
            preds=torch.tensor([1.5, 1, 2.5, 3]),
            temperature=0.1,
        ),
    ),
    "cross_uniformity": fn_case(
        CF.cross_uniformity,
        ("x", "y"),
        {"x": _E, "y": _E},
        values=lambda: dict(x=r(N, D), y=r(N, D, seed=1)),
    ),
    "cwcl": fn_case(
        CF.cwcl,
        ("frozen", "trained"),
        {"frozen": _E, "trained": _ER, "temperature": _T},
        values=lambda: dict(frozen=r(N, D), trained=r(N, D, seed=1), temperature=0.1),
    ),
    "dcl": fn_case(
        CF.dcl,
        ("z1", "z2"),
        {"z1": _E, "z2": _ER, "temperature": _TR},
        values=lambda: dict(z1=r(N, D), z2=r(N, D, seed=1), temperature=0.1),
    ),
    "dclw": fn_case(
        CF.dclw,
        ("z1", "z2"),
        {"z1": _E, "z2": _ER, "temperature": _TR},
        values=lambda: dict(z1=r(N, D), z2=r(N, D, seed=1), temperature=0.1),
    ),
    "debiased_info_nce": fn_case(
        CF.debiased_info_nce,
        ("z1", "z2"),
        {"z1": _E, "z2": _ER, "temperature": _TR},
        values=lambda: dict(z1=r(N, D), z2=r(N, D, seed=1), temperature=0.5),
    ),
    "focal_info_nce": fn_case(
        CF.focal_info_nce,
        ("query", "positive"),
        {"query": _E, "positive": _ER, "temperature": _T},
        values=lambda: dict(query=r(N, D), positive=r(N, D, seed=1), temperature=0.1),
    ),
    "groco": fn_case(
        CF.groco,
        ("views",),
        {"views": Arg("views")},
        kw={"topk_neg": 2},
        values=lambda: dict(views=r(2, N, D)),
    ),
    "shuffled_group_whitening": fn_case(
        CF.shuffled_group_whitening,
        ("x",),
        {"x": _E},
        kw={"num_groups": 2},
        values=lambda: dict(x=r(8, D)),
    ),
    "hard_negative_info_nce": fn_case(
        CF.hard_negative_info_nce,
        ("z1", "z2"),
        {"z1": _E, "z2": _ER, "temperature": _TR},
        values=lambda: dict(z1=r(N, D), z2=r(N, D, seed=1), temperature=0.5),
    ),
    "icnn": fn_case(
        CF.icnn,
        ("origin", "labels"),
        {"origin": _E, "labels": _L},
        values=lambda: dict(origin=r(6, D), labels=torch.tensor([0, 0, 0, 1, 1, 1])),
    ),
    "info_nce": fn_case(
        CF.info_nce,
        ("query", "key", "negatives"),
        {"query": _E, "key": _E, "negatives": Arg("float", extra_dim_ok=True), "temperature": _TR},
        values=lambda: dict(
            query=r(N, D), key=r(N, D, seed=1), negatives=r(3, D, seed=2), temperature=0.1
        ),
        skip={("key", "rows"): "M < N raises, but the row count is free"},
    ),
    "isogclr": fn_case(
        CF.isogclr,
        ("z1", "z2", "index", "u", "tau", "grad_tau"),
        {
            "z1": _E,
            "z2": _ER,
            "index": Arg("index", rows=True, size=8),
            "u": _STATE,
            "tau": _STATE,
            "grad_tau": _STATE,
        },
        values=_isogclr_values,
    ),
    "isogclr_bimodal": fn_case(
        CF.isogclr_bimodal,
        (
            "image",
            "text",
            "index",
            "u_img",
            "b_img",
            "u_txt",
            "b_txt",
            "tau_img",
            "tau_txt",
            "grad_tau_img",
            "grad_tau_txt",
        ),
        {
            "image": _E,
            "text": _ER,
            "index": Arg("index", rows=True, size=8),
            **{
                s: _STATE
                for s in (
                    "u_img",
                    "b_img",
                    "u_txt",
                    "b_txt",
                    "tau_img",
                    "tau_txt",
                    "grad_tau_img",
                    "grad_tau_txt",
                )
            },
        },
        values=lambda: _bimodal_values(iso=True),
    ),
    "max_margin_contrastive": fn_case(
        CF.max_margin_contrastive,
        ("logits", "positive", "negative"),
        {
            "logits": Arg("float"),
            "positive": Arg("index", rows=True, size=5),
            "negative": Arg("index", rows=True, size=5),
        },
        values=lambda: dict(
            logits=r(2, 3, 5),
            positive=torch.tensor([[0, 1, 2], [3, 4, 0]]),
            negative=torch.tensor([[1, 1, 3], [2, 0, 4]]),
        ),
    ),
    "mlcd": fn_case(
        CF.mlcd,
        ("embeddings", "centres", "positives"),
        {
            "embeddings": _E,
            "centres": _E,
            "positives": Arg("index", rows=True, size=5, neg_ok=True, flat_ok=True),
            "negatives": Arg("index", size=5),
        },
        values=lambda: dict(
            embeddings=r(N, D),
            centres=r(5, D, seed=1),
            positives=torch.tensor([[0], [1], [2], [3]]),
            negatives=torch.tensor([0, 2, 4]),
        ),
    ),
    "multiple_negatives_ranking": fn_case(
        CF.multiple_negatives_ranking,
        ("anchor", "positive"),
        {"anchor": _E, "positive": _ER, "negatives": Arg("views")},
        var="negatives",
        values=lambda: dict(anchor=r(N, D), positive=r(N, D, seed=1), negatives=[r(N, D, seed=2)]),
        skip={
            ("negatives", "no-views"): "no extra negatives is valid",
            ("negatives", "rank"): "(N, h, d) per-anchor negatives are valid",
        },
    ),
    "mv_dhel": fn_case(
        CF.mv_dhel,
        ("views",),
        {"views": Arg("views"), "temperature": _T},
        values=lambda: dict(views=r(2, N, D), temperature=0.2),
    ),
    "mv_info_nce": fn_case(
        CF.mv_info_nce,
        ("views",),
        {"views": Arg("views"), "temperature": _T},
        values=lambda: dict(views=r(2, N, D), temperature=0.2),
    ),
    "nt_xent": fn_case(
        CF.nt_xent,
        ("z1", "z2"),
        {"z1": _E, "z2": _ER, "temperature": _TR},
        values=lambda: dict(z1=r(N, D), z2=r(N, D, seed=1), temperature=0.1),
    ),
    "one_to_k_contrastive": fn_case(
        CF.one_to_k_contrastive,
        ("images", "texts"),
        {"images": _E, "texts": _E, "temperature": _T},
        values=lambda: dict(images=r(2, D), texts=r(N, D, seed=1), temperature=0.1),
    ),
    "pair_margin_contrastive": fn_case(
        CF.pair_margin_contrastive,
        ("x1", "x2", "dissimilar"),
        {"x1": _E, "x2": _ER, "dissimilar": Arg("real", rows=True)},
        values=lambda: dict(x1=r(N, D), x2=r(N, D, seed=1), dissimilar=torch.tensor([0, 1, 0, 1])),
    ),
    "pamc": fn_case(
        CF.pamc,
        ("z", "q", "adjacency"),
        {"z": _E, "q": Arg("float", rows=True), "adjacency": Arg("real", rows=True)},
        values=lambda: dict(z=r(N, D), q=torch.softmax(r(N, 2, seed=1), 1), adjacency=_adjacency()),
    ),
    "partial_ranking_distillation": fn_case(
        CF.partial_ranking_distillation,
        ("query", "keys", "negatives", "teacher_scores"),
        {
            "query": _E,
            "keys": _E,
            "negatives": Arg("index", rows=True, size=5),
            "teacher_scores": Arg("float", rows=True),
            "temperature": _T,
        },
        values=lambda: dict(
            query=r(N, D),
            keys=r(5, D, seed=1),
            negatives=torch.tensor([[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 0]]),
            teacher_scores=r(N, 3, seed=2),
            temperature=0.1,
        ),
    ),
    "proto_triplet": fn_case(
        CF.proto_triplet,
        ("queries", "labels", "prototypes"),
        {"queries": _E, "labels": Arg("index", rows=True, size=2), "prototypes": _E},
        values=lambda: dict(queries=r(N, D), labels=_labels(), prototypes=r(2, D, seed=1)),
    ),
    "siglip": fn_case(
        CF.siglip,
        ("image", "text"),
        {"image": _E, "text": _ER, "scale": Arg("temp", name="scale")},
        values=lambda: dict(image=r(N, D), text=r(N, D, seed=1), scale=10.0),
    ),
    "simctg_contrastive": fn_case(
        CF.simctg_contrastive,
        ("hidden_states",),
        {"hidden_states": Arg("float")},
        values=lambda: dict(hidden_states=r(2, 3, D)),
    ),
    "simctg": fn_case(
        CF.simctg,
        ("hidden_states", "logits", "labels"),
        {
            "hidden_states": Arg("float"),
            "logits": Arg("float", rows=True),
            "labels": Arg("index", rows=True, size=5),
        },
        values=lambda: dict(
            hidden_states=r(2, 3, D),
            logits=r(2, 3, 5, seed=1),
            labels=torch.tensor([[0, 1, 2], [3, 4, 0]]),
        ),
    ),
    "sinkhorn_knopp": fn_case(
        CF.sinkhorn_knopp,
        ("scores",),
        {"scores": Arg("float")},
        values=lambda: dict(scores=r(N, 3)),
    ),
    "sogclr": fn_case(
        CF.sogclr,
        ("z1", "z2", "index", "u"),
        {
            "z1": _E,
            "z2": _ER,
            "index": Arg("index", rows=True, size=8),
            "u": _STATE,
            "temperature": _T,
        },
        values=lambda: dict(_sogclr_values(), temperature=0.1),
    ),
    "sogclr_bimodal": fn_case(
        CF.sogclr_bimodal,
        ("image", "text", "index", "u_img", "b_img", "u_txt", "b_txt"),
        {
            "image": _E,
            "text": _ER,
            "index": Arg("index", rows=True, size=8),
            **{s: _STATE for s in ("u_img", "b_img", "u_txt", "b_txt")},
            "temperature": _T,
        },
        values=lambda: dict(_bimodal_values(), temperature=0.1),
    ),
    "supcon": fn_case(
        CF.supcon,
        ("features", "labels"),
        {"features": _E, "labels": _L, "temperature": _T},
        values=lambda: dict(features=r(N, D), labels=_labels(), temperature=0.1),
        skip={("features", "extra-dim"): "(B, V, d) is valid (B = 1 here)"},
    ),
    "supremix": fn_case(
        CF.supremix,
        ("features", "labels"),
        {"features": Arg("float"), "labels": Arg("real", rows=True), "temperature": _T},
        values=lambda: dict(
            features=r(N, 2, D), labels=torch.tensor([1.0, 2, 2, 3]), temperature=0.3
        ),
    ),
    "swav": fn_case(
        CF.swav,
        ("embeddings", "prototypes"),
        {"embeddings": _E, "prototypes": _E, "temperature": _T},
        values=lambda: dict(embeddings=r(N, D), prototypes=r(3, D, seed=1), temperature=0.1),
    ),
    "symile": fn_case(
        CF.symile,
        ("representations",),
        {"representations": Arg("views"), "temperature": _T},
        values=lambda: dict(representations=r(3, N, D), temperature=0.1),
    ),
    "triplet_margin": fn_case(
        CF.triplet_margin,
        ("anchor", "positive", "negative"),
        {"anchor": _E, "positive": _ER, "negative": _ER},
        values=lambda: dict(anchor=r(N, D), positive=r(N, D, seed=1), negative=r(N, D, seed=2)),
    ),
    "uniformity": fn_case(CF.uniformity, ("x",), {"x": _E}, values=lambda: dict(x=r(N, D))),
    "whitened_cse": fn_case(
        CF.whitened_cse,
        ("z1", "z2"),
        {"z1": _E, "z2": _ER, "positives": Arg("views"), "temperature": _T},
        var="positives",
        values=lambda: dict(
            z1=r(N, D), z2=r(N, D, seed=1), positives=[r(N, D, seed=2)], temperature=0.05
        ),
        skip={("positives", "no-views"): "z2 alone is valid"},
    ),
}

for _name, _arg in (
    ("logit_scale_from_temperature", "temperature"),
    ("scale_from_temperature", "temperature"),
    ("temperature_from_scale", "scale"),
):
    CASES[_name] = fn_case(
        getattr(CF, _name),
        (_arg,),
        {_arg: Arg("temp", name=_arg)},
        values=lambda a=_arg: {a: 0.1},
        skip={
            (_arg, v): "element-wise: a tensor of any shape converts"
            for v in ("wrong-shape", "matrix")
        },
    )
for _name in ("scale_from_logit_scale", "temperature_from_logit_scale"):
    CASES[_name] = fn_case(
        getattr(CF, _name),
        ("logit_scale",),
        {"logit_scale": Arg("temp", name="logit_scale")},
        values=lambda: {"logit_scale": 2.0},
        skip={
            **{
                ("logit_scale", v): "a log scale may be <= 0"
                for v in ("zero", "negative", "tensor-zero")
            },
            **{
                ("logit_scale", v): "element-wise: a tensor of any shape converts"
                for v in ("wrong-shape", "matrix")
            },
        },
    )


# ------------------------------------------------------------------ loss modules


def module_case(make, base: str, pos=None, drop=(), add=None, values=None, skip=None, init=None):
    """A case calling ``make()(*[v[p] for p in pos])``; arguments and values from ``CASES[base]``
    (less ``drop``, which the module owns; plus ``add``)."""
    b = CASES[base]
    args = {k: a for k, a in b.args.items() if k not in drop}
    args.update(add or {})
    pos = tuple(pos or [k for k in args if args[k].kind != "temp"])

    def call(v):
        kw = {k: v[k] for k in args if k not in pos}
        names = {"temperature": "init_temperature", **(init or {})}
        opts = {names.get(k, k): kw.pop(k) for k in list(kw) if args[k].kind == "temp"}
        return make(**opts)(*[v[p] for p in pos], **kw)

    def vals():
        v = (values or b.values)()
        return {k: v[k] for k in args}

    sk = {k: w for k, w in b.skip.items() if k[0] in args}
    sk.update(skip or {})
    return Case(call, vals, args, sk)


CASES.update(
    {
        "embedding_distillation": fn_case(
            CF.embedding_distillation,
            ("student", "teacher"),
            {"student": _E, "teacher": _ER},
            values=lambda: dict(student=r(N, D), teacher=r(N, D, seed=1)),
        ),
        "in_batch_kl_distillation": fn_case(
            CF.in_batch_kl_distillation,
            ("query", "candidates", "teacher_query", "teacher_candidates"),
            {
                "query": _E,
                "candidates": _E,
                "teacher_query": _ER,
                "teacher_candidates": _ER,
                "temperature": _T,
            },
            values=lambda: dict(
                query=r(N, D),
                candidates=r(N + 2, D, seed=1),
                teacher_query=r(N, 5, seed=2),
                teacher_candidates=r(N + 2, 5, seed=3),
                temperature=0.5,
            ),
        ),
        "kl_distillation": fn_case(
            CF.kl_distillation,
            ("query", "candidates", "teacher_scores"),
            {
                "query": _E,
                "candidates": _ER,
                "teacher_scores": Arg("real", rows=True, inf_ok=True),  # -inf pads a list
                "temperature": _T,
                "teacher_temperature": _T,
            },
            values=lambda: dict(
                query=r(N, D),
                candidates=r(N, 3, D, seed=1),
                teacher_scores=r(N, 3, seed=2),
                temperature=0.5,
                teacher_temperature=1.0,
            ),
        ),
        "margin_mse": fn_case(
            CF.margin_mse,
            ("query", "candidates", "teacher"),
            {"query": _E, "candidates": _ER, "teacher": Arg("real", rows=True)},
            values=lambda: dict(
                query=r(N, D), candidates=r(N, 3, D, seed=1), teacher=r(N, 3, seed=2)
            ),
        ),
    }
)


def _ranking_grades():
    return torch.tensor(
        [
            [3.0, 1.0, 0.0, 2.0, 0.0],
            [0.0, 1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0, 0.0],
            [1.0, 1.0, 2.0, 0.0, 0.0],
        ]
    )


CASES.update(
    {
        "angle": fn_case(
            CF.angle,
            ("x1", "x2", "labels"),
            {"x1": _E, "x2": _ER, "labels": Arg("real", rows=True), "scale": _T},
            values=lambda: dict(
                x1=r(N, D),
                x2=r(N, D, seed=1),
                labels=torch.tensor([0.1, 0.9, 0.5, 0.5]),
                scale=20.0,
            ),
        ),
        "cosent": fn_case(
            CF.cosent,
            ("x1", "x2", "labels"),
            {"x1": _E, "x2": _ER, "labels": Arg("real", rows=True), "temperature": _T},
            values=lambda: dict(
                x1=r(N, D),
                x2=r(N, D, seed=1),
                labels=torch.tensor([0.1, 0.9, 0.5, 0.5]),
                temperature=0.05,
            ),
        ),
        "list_net": fn_case(
            CF.list_net,
            ("query", "candidates", "relevance"),
            {
                "query": _E,
                "candidates": _E,
                "relevance": Arg("real", rows=True),
                "temperature": _T,
            },
            values=lambda: dict(
                query=r(N, D),
                candidates=r(5, D, seed=1),
                relevance=_ranking_grades(),
                temperature=0.05,
            ),
        ),
        "plackett_luce": fn_case(
            CF.plackett_luce,
            ("query", "candidates", "relevance"),
            {
                "query": _E,
                "candidates": _E,
                "relevance": Arg("real", rows=True),
                "temperature": _T,
            },
            values=lambda: dict(
                query=r(N, D),
                candidates=r(5, D, seed=1),
                relevance=_ranking_grades(),
                temperature=0.05,
            ),
        ),
    }
)


# --- compositional cases (one CASES.update block) ---
_COMP_NEG = Arg("float", rows=True)  # (N, K, d): K negatives per sample
CASES.update(
    {
        "neg_clip": fn_case(
            CF.neg_clip,
            ("image", "text", "negatives"),
            {"image": _E, "text": _ER, "negatives": _COMP_NEG, "temperature": _T},
            values=lambda: dict(
                image=r(N, D), text=r(N, D, seed=1), negatives=r(N, 2, D, seed=2), temperature=0.1
            ),
        ),
        "image_grounded_contrast": fn_case(
            CF.image_grounded_contrast,
            ("image", "text", "negatives"),
            {"image": _E, "text": _ER, "negatives": _COMP_NEG, "temperature": _TR},
            values=lambda: dict(
                image=r(N, D), text=r(N, D, seed=1), negatives=r(N, 2, D, seed=2), temperature=0.1
            ),
        ),
        "text_grounded_contrast": fn_case(
            CF.text_grounded_contrast,
            ("text", "teacher_text", "negatives"),
            {"text": _E, "teacher_text": _ER, "negatives": _COMP_NEG, "temperature": _TR},
            values=lambda: dict(
                text=r(N, D),
                teacher_text=r(N, D, seed=1),
                negatives=r(N, 3, D, seed=2),
                temperature=0.1,
            ),
        ),
        "count_clip": fn_case(
            CF.count_clip,
            ("image", "text", "counterfactual", "counting"),
            {
                "image": _E,
                "text": _ER,
                "counterfactual": _ER,
                "counting": Arg("mask", rows=True),
                "temperature": _T,
            },
            values=lambda: dict(
                image=r(N, D),
                text=r(N, D, seed=1),
                counterfactual=r(N, D, seed=2),
                counting=torch.tensor([True, False, True, True]),
                temperature=0.1,
            ),
        ),
    }
)
# the learnable-scale twins (the other twins are derived below)
CASES.update(
    {
        "NegCLIP": module_case(CL.NegCLIP, "neg_clip"),
        "ImageGroundedContrast": module_case(CL.ImageGroundedContrast, "image_grounded_contrast"),
        "CountCLIP": module_case(CL.CountCLIP, "count_clip"),
    }
)


# --- preference cases (one CASES.update block) ---
_LP = Arg("float", rows=True)  # log-probabilities: one row per pair (or per prompt)
_PAIR = ("policy_chosen", "policy_rejected", "reference_chosen", "reference_rejected")
_SPARSE = _PAIR + ("chosen_mask", "rejected_mask", "chosen_weights", "rejected_weights")
_SPARSE += ("chosen_kl", "rejected_kl", "chosen_kl_weights", "rejected_kl_weights")
CASES.update(
    {
        "dpo": fn_case(
            CF.dpo,
            _PAIR,
            {**{n: _LP for n in _PAIR}, "beta": _T},
            values=lambda: dict(
                policy_chosen=r(N),
                policy_rejected=r(N, seed=1),
                reference_chosen=r(N, seed=2),
                reference_rejected=r(N, seed=3),
                beta=0.1,
            ),
        ),
        "ipo": fn_case(
            CF.ipo,
            _PAIR,
            {**{n: _LP for n in _PAIR}, "beta": _T},
            values=lambda: dict(
                policy_chosen=r(N),
                policy_rejected=r(N, seed=1),
                reference_chosen=r(N, seed=2),
                reference_rejected=r(N, seed=3),
                beta=0.1,
            ),
        ),
        "npo": fn_case(
            CF.npo,
            ("policy_forget", "reference_forget"),
            {"policy_forget": _LP, "reference_forget": _LP, "beta": _T},
            values=lambda: dict(policy_forget=r(N), reference_forget=r(N, seed=1), beta=0.1),
        ),
        "d2o": fn_case(
            CF.d2o,
            ("policy_samples", "policy_rejected", "reference_samples", "reference_rejected"),
            {
                "policy_samples": _LP,
                "policy_rejected": _LP,
                "reference_samples": _LP,
                "reference_rejected": _LP,
                "beta": _T,
                "alpha": _T,
            },
            values=lambda: dict(
                policy_samples=r(N, 3),
                policy_rejected=r(N, seed=1),
                reference_samples=r(N, 3, seed=2),
                reference_rejected=r(N, seed=3),
                beta=0.1,
                alpha=0.2,
            ),
        ),
        "sparse_po": fn_case(
            CF.sparse_po,
            _SPARSE,
            {
                **{n: _LP for n in _SPARSE},
                "chosen_mask": Arg("mask", rows=True),
                "rejected_mask": Arg("mask", rows=True),
                "beta": _T,
            },
            values=lambda: dict(
                policy_chosen=r(N, 5),
                policy_rejected=r(N, 3, seed=1),
                reference_chosen=r(N, 5, seed=2),
                reference_rejected=r(N, 3, seed=3),
                chosen_mask=r(N, 5, seed=4) > -0.5,
                rejected_mask=r(N, 3, seed=5) > -0.5,
                chosen_weights=torch.rand(N, 5, generator=g(6)),
                rejected_weights=torch.rand(N, 3, generator=g(7)),
                chosen_kl=r(N, 5, seed=8).abs(),
                rejected_kl=r(N, 3, seed=9).abs(),
                chosen_kl_weights=torch.rand(N, 5, generator=g(10)),
                rejected_kl_weights=torch.rand(N, 3, generator=g(11)),
                beta=0.1,
            ),
        ),
        "svco": fn_case(
            CF.svco,
            ("policy", "reference"),
            {"policy": _LP, "reference": _LP},
            values=lambda: dict(policy=r(N, 2, 3), reference=r(N, 2, 3, seed=1)),
        ),
        "simpo": fn_case(
            CF.simpo,
            ("policy_chosen", "policy_rejected"),
            {"policy_chosen": _LP, "policy_rejected": _LP, "beta": _T},
            values=lambda: dict(policy_chosen=r(N), policy_rejected=r(N, seed=1), beta=2.0),
        ),
        "cpo": fn_case(
            CF.cpo,
            ("policy_chosen", "policy_rejected", "chosen_lengths"),
            {
                "policy_chosen": _LP,
                "policy_rejected": _LP,
                "chosen_lengths": Arg("real", rows=True),
                "beta": _T,
            },
            values=lambda: dict(
                policy_chosen=r(N),
                policy_rejected=r(N, seed=1),
                chosen_lengths=torch.tensor([3.0, 5.0, 2.0, 4.0]),
                beta=0.1,
            ),
        ),
        "orpo": fn_case(
            CF.orpo,
            ("policy_chosen", "policy_rejected"),
            {"policy_chosen": _LP, "policy_rejected": _LP, "beta": _T},
            values=lambda: dict(
                policy_chosen=-r(N).abs() - 0.1,
                policy_rejected=-r(N, seed=1).abs() - 0.1,
                beta=0.1,
            ),
        ),
        "slic_hf": fn_case(
            CF.slic_hf,
            ("policy_chosen", "policy_rejected", "policy_target"),
            {"policy_chosen": _LP, "policy_rejected": _LP, "policy_target": _LP},
            values=lambda: dict(
                policy_chosen=r(N), policy_rejected=r(N, seed=1), policy_target=r(N, seed=2)
            ),
        ),
    }
)


# --- sparse cases (one CASES.update block) ---
CASES.update(
    {
        "flops": fn_case(
            CF.flops, ("embeddings",), {"embeddings": _E}, values=lambda: dict(embeddings=r(N, D))
        ),
        "idf_flops": fn_case(
            CF.idf_flops,
            ("contributions", "idf"),
            {"contributions": _E, "idf": Arg("float")},
            values=lambda: dict(contributions=r(N, D), idf=0.5 + r(D, seed=1).abs()),
        ),
    }
)


# --- dense cases (one CASES.update block) ---
_BOXES = Arg("real", rows=True)


def _pixel_values(keys=False):
    v = dict(
        query=r(2, D, 3, 3),
        key=r(2, D, 2, 3, seed=1),
        query_boxes=torch.tensor([[0.0, 0.0, 0.6, 0.6], [0.1, 0.2, 0.9, 0.8]]),
        key_boxes=torch.tensor([[0.2, 0.1, 0.8, 0.7], [0.8, 0.1, 0.2, 0.9]]),
        temperature=0.3,
    )
    if keys:
        return dict(
            x1=v["query"],
            x2=v["key"],
            key1=r(2, D, 3, 3, seed=2),
            key2=r(2, D, 2, 3, seed=3),
            boxes1=v["query_boxes"],
            boxes2=v["key_boxes"],
        )
    return v


CASES.update(
    {
        "pixpro": fn_case(
            CF.pixpro,
            ("x1", "x2", "key1", "key2", "boxes1", "boxes2"),
            {"x1": _E, "x2": _ER, "key1": _ER, "key2": _ER, "boxes1": _BOXES, "boxes2": _BOXES},
            values=lambda: _pixel_values(keys=True),
        ),
        "pixel_contrast": fn_case(
            CF.pixel_contrast,
            ("query", "key", "query_boxes", "key_boxes"),
            {
                "query": _E,
                "key": _ER,
                "query_boxes": _BOXES,
                "key_boxes": _BOXES,
                "temperature": _T,
            },
            values=_pixel_values,
        ),
        "comet": fn_case(
            CF.comet,
            ("z1", "z2", "patient_ids", "trial_ids"),
            {"z1": _E, "z2": _ER, "patient_ids": _L, "trial_ids": _L},
            values=lambda: dict(
                z1=r(N, 3, D),
                z2=r(N, 3, D, seed=1),
                patient_ids=_labels(),
                trial_ids=torch.tensor([0, 1, 2, 2]),
            ),
        ),
        "temporal_contrast": fn_case(
            CF.temporal_contrast,
            ("z1", "z2"),
            {"z1": _E, "z2": _ER, "temperature": _T},
            values=lambda: dict(z1=r(N, 3, D), z2=r(N, 3, D, seed=1), temperature=0.1),
        ),
    }
)


# --- infonce-nce-dexml cases (one CASES.update block) ---
CASES.update(
    {
        "dexml": fn_case(
            CF.dexml,
            ("query", "candidates", "positives", "weights", "ignore"),
            {
                "query": _E,
                "candidates": _E,
                "positives": Arg("index", rows=True, size=6, neg_ok=True),
                "weights": Arg("real", rows=True),
                "ignore": Arg("index", rows=True, size=6, neg_ok=True, flat_ok=True),  # (N,) too
                "temperature": _TR,
            },
            values=lambda: dict(
                query=r(N, D),
                candidates=r(6, D, seed=1),
                positives=torch.tensor([[0, 3], [1, -1], [2, 5], [4, -1]]),
                weights=torch.tensor([[1.0, 0.5], [1.0, 0.0], [0.2, 2.0], [1.0, 0.0]]),
                ignore=torch.tensor([[1], [-1], [-1], [5]]),
                temperature=0.05,
            ),
        ),
        "nce": fn_case(
            CF.nce,
            ("log_model_data", "log_model_noise", "log_noise_data", "log_noise_noise"),
            {
                "log_model_data": _E,
                "log_model_noise": Arg("float", rows=True, flat_ok=True),  # (M,): shared noise
                "log_noise_data": _ER,
                "log_noise_noise": _ER,
            },
            values=lambda: dict(
                log_model_data=r(N),
                log_model_noise=r(N, 3, seed=1),
                log_noise_data=r(N, seed=2),
                log_noise_noise=r(N, 3, seed=3),
            ),
            skip={
                ("log_model_data", "empty"): "an empty batch is valid: the row mismatch is "
                "reported for log_noise_data",
            },
        ),
        "compositional_nll": fn_case(
            CF.compositional_nll,
            ("log_model_data", "log_model_noise", "log_noise_noise", "log_u"),
            {
                "log_model_data": _E,
                "log_model_noise": _E,
                "log_noise_noise": _ER,
                "log_u": Arg("float", empty_ok=True, inf_ok=True),  # 0-dim; -inf: fresh state
            },
            values=lambda: dict(
                log_model_data=r(N),
                log_model_noise=r(6, seed=1),
                log_noise_noise=r(6, seed=2),
                log_u=torch.tensor(0.5),
            ),
        ),
        "CompositionalNLL": fn_case(
            lambda log_model_data, log_model_noise, log_noise_noise: CL.CompositionalNLL()(
                log_model_data, log_model_noise, log_noise_noise
            ),
            ("log_model_data", "log_model_noise", "log_noise_noise"),
            {"log_model_data": _E, "log_model_noise": _E, "log_noise_noise": _ER},
            values=lambda: dict(
                log_model_data=r(N), log_model_noise=r(6, seed=1), log_noise_noise=r(6, seed=2)
            ),
        ),
        "SemiHardMiner": fn_case(
            lambda embeddings, labels, ref_embeddings, ref_labels: CN.SemiHardMiner(0.5)(
                embeddings, labels, ref_embeddings, ref_labels
            ),
            ("embeddings", "labels", "ref_embeddings", "ref_labels"),
            {"embeddings": _E, "labels": _L, "ref_embeddings": _E, "ref_labels": _L},
            values=lambda: dict(
                embeddings=r(N, D),
                labels=_labels(),
                ref_embeddings=r(5, D, seed=1),
                ref_labels=torch.tensor([0, 1, 1, 2, 0]),
            ),
        ),
    }
)


# --- distillation-iii cases (one CASES.update block) ---
def _albef_values():
    return dict(
        image=r(N, D),
        text=r(N, D, seed=1),
        image_momentum=r(N, D, seed=2),
        text_momentum=r(N, D, seed=3),
        image_queue=u(5, D, seed=4),
        text_queue=u(3, D, seed=5),
        temperature=0.1,
    )


_ALBEF = ("image", "text", "image_momentum", "text_momentum")
_ALBEF_ARGS = {"image": _E, "text": _ER, "image_momentum": _ER, "text_momentum": _ER}
CASES.update(
    {
        "momentum_distillation": fn_case(
            CF.momentum_distillation,
            (*_ALBEF, "image_queue", "text_queue"),
            {
                **_ALBEF_ARGS,
                "image_queue": Arg("float", empty_ok=True),  # an empty queue: no queue rows
                "text_queue": Arg("float", empty_ok=True),
                "temperature": _T,
            },
            values=_albef_values,
        ),
        "MomentumDistillation": fn_case(  # stateful: its queues and temperature are its own
            lambda image, text, image_momentum, text_momentum, temperature: CL.MomentumDistillation(
                D, queue_size=8, init_temperature=temperature
            )(image, text, image_momentum, text_momentum),
            _ALBEF,
            {**_ALBEF_ARGS, "temperature": _T},
            values=_albef_values,
        ),
    }
)


# Objective twins forward their inputs and keyword options to their functional: the same
# case with the module in place of the function.
for _name in CL.__all__:
    _cls = getattr(CL, _name)
    if not inspect.isclass(_cls) or _canonical(_name, _cls) != _name:
        continue
    if issubclass(_cls, Objective) and not issubclass(_cls, ScaledObjective):
        _fn = _cls.functional.__name__
    else:
        continue
    if _fn in CASES:
        CASES[_name] = CASES[_fn].rebuild(lambda *a, _cls=_cls, **k: _cls()(*a, **k))

_NO_TEMP = ("temperature",)
CASES.update(
    {
        "AMCL": module_case(
            lambda: CL.AMCL(dim=D, num_heads=1, hidden_dim=4),
            "amcl",
            values=lambda: dict(z1=r(N, 1, D), z2=r(N, 1, D, seed=1)),
        ),
        "Alignment": module_case(CL.Alignment, "alignment"),
        "CLIPAlignUniform": module_case(CL.CLIPAlignUniform, "clip_align_uniform"),
        "CrossUniformity": module_case(CL.CrossUniformity, "cross_uniformity"),
        "CLIP": module_case(CL.CLIP, "clip"),
        "CWCL": module_case(CL.CWCL, "cwcl"),
        "GroCo": module_case(lambda: CL.GroCo(topk_neg=2), "groco"),
        "ICNN": module_case(CL.ICNN, "icnn"),
        "MaxMarginContrastive": module_case(CL.MaxMarginContrastive, "max_margin_contrastive"),
        "OneToKContrastive": module_case(
            CL.OneToKContrastive, "one_to_k_contrastive", init={"temperature": "temperature"}
        ),
        "PairMarginContrastive": module_case(CL.PairMarginContrastive, "pair_margin_contrastive"),
        "PamC": module_case(CL.PamC, "pamc"),
        "PartialRankingDistillation": module_case(
            lambda **k: CL.PartialRankingDistillation(**k),
            "partial_ranking_distillation",
            init={"temperature": "temperature"},
        ),
        "ProtoTriplet": module_case(CL.ProtoTriplet, "proto_triplet"),
        "ShuffledGroupWhitening": module_case(
            lambda: CL.ShuffledGroupWhitening(D, num_groups=2, num_views=2),
            "shuffled_group_whitening",
        ),
        "SigLIP": module_case(CL.SigLIP, "siglip", init={"scale": "init_scale"}),
        "SogCLR": module_case(
            lambda **k: CL.SogCLR(8, **k),
            "sogclr",
            drop=("u",),
            init={"temperature": "temperature"},
        ),
        "iSogCLR": module_case(lambda: CL.iSogCLR(8), "isogclr", drop=("u", "tau", "grad_tau")),
        "SogCLRBimodal": module_case(
            lambda **k: CL.SogCLRBimodal(8, **k),
            "sogclr_bimodal",
            drop=("u_img", "b_img", "u_txt", "b_txt"),
            init={"temperature": "temperature"},
        ),
        "iSogCLRBimodal": module_case(
            lambda: CL.iSogCLRBimodal(8),
            "isogclr_bimodal",
            drop=(
                "u_img",
                "b_img",
                "u_txt",
                "b_txt",
                "tau_img",
                "tau_txt",
                "grad_tau_img",
                "grad_tau_txt",
            ),
        ),
        "SwAV": module_case(
            lambda **k: CL.SwAV(D, 3, **k),
            "swav",
            drop=("prototypes",),
            init={"temperature": "temperature"},
        ),
        "Symile": fn_case(
            lambda *reps, init_temperature=0.07: CL.Symile(init_temperature=init_temperature)(
                *reps
            ),
            (),
            {
                "representations": Arg("views"),
                "init_temperature": Arg("temp", name="init_temperature"),
            },
            var="representations",
            values=lambda: dict(representations=list(r(3, N, D)), init_temperature=0.1),
        ),
        "TripletMargin": module_case(CL.TripletMargin, "triplet_margin"),
        "Uniformity": module_case(CL.Uniformity, "uniformity"),
    }
)
CASES["ShuffledGroupWhitening"].args["x"] = Arg("float", name="x")


# ------------------------------------------------------------------ negatives and positives

_FILTER_SCORES = Arg("float", inf_ok=True)
_POS_SCORES = Arg("real", rows=True, inf_ok=True)


def _scores():
    return dict(scores=r(N, 5), positive_scores=torch.full((N,), 0.5))


def _mine_values():
    return dict(query=r(N, D), key=r(N, D, seed=1), labels=torch.tensor([0, 1, 2, 3]))


CASES.update(
    {
        "AdaMEOWWeights": fn_case(
            lambda a, z: CN.AdaMEOWWeights(D, hidden=4)(a, z),
            ("a", "z"),
            {"a": _E, "z": _E},
            values=lambda: dict(a=r(N, D), z=r(N, D, seed=1)),
        ),
        "BadPairMiner": fn_case(
            lambda ids, losses: CN.BadPairMiner()(ids, losses),
            ("ids", "losses"),
            {"ids": Arg("index", size=2**62), "losses": Arg("float", rows=True)},
            values=lambda: dict(ids=torch.arange(N), losses=r(N).abs()),
            skip={
                ("ids", "out-of-range"): "ids are arbitrary sample ids",
                ("ids", "negative"): "ids are arbitrary sample ids",
            },
        ),
        "ClusterNegativeWeights": fn_case(
            lambda labels, key_labels: CN.ClusterNegativeWeights(labels, key_labels).dense(),
            ("labels", "key_labels"),
            {"labels": Arg("int", flat_ok=True), "key_labels": Arg("int", rows=True, flat_ok=True)},
            values=lambda: dict(
                labels=torch.tensor([[0, 0, 1, 1]]), key_labels=torch.tensor([[0, 1, 1, 0]])
            ),
            skip={("labels", "extra-dim"): "(N,) and (G, N) are both valid"},
        ),
        "CommunityNegativeWeights": fn_case(
            lambda community_matrix, row_communities: CN.CommunityNegativeWeights(
                community_matrix, row_communities
            ).dense(),
            ("community_matrix", "row_communities"),
            {"community_matrix": Arg("float"), "row_communities": Arg("index", size=2)},
            values=lambda: dict(
                community_matrix=torch.tensor([[1.0, 0.5], [0.5, 1.0]]),
                row_communities=torch.tensor([0, 1, 1, 0]),
            ),
        ),
        "DebCSESampler": fn_case(
            lambda score, surface: CN.DebCSESampler().weights(score, surface),
            ("score", "surface"),
            {"score": Arg("real"), "surface": Arg("real", rows=True)},
            values=lambda: dict(
                score=torch.tensor([0.1, 0.5, 0.9, 0.3]), surface=torch.tensor([1.0, 2, 3, 4])
            ),
        ),
        "FalseNegativeFilter": fn_case(
            lambda scores, positive_scores: CN.FalseNegativeFilter(
                max_score=0.9, absolute_margin=0.1
            )(scores, positive_scores),
            ("scores", "positive_scores"),
            {"scores": _FILTER_SCORES, "positive_scores": _POS_SCORES},
            values=_scores,
        ),
        "FeatureAwareSampler": fn_case(
            lambda pseudo_labels: list(CN.FeatureAwareSampler(pseudo_labels, 2)),
            ("pseudo_labels",),
            {"pseudo_labels": Arg("int")},
            values=lambda: dict(pseudo_labels=_labels()),
        ),
        "HardNegativeMixing": fn_case(
            lambda query, negatives: CN.HardNegativeMixing(2, 2, 1)(
                query, negatives, generator=g()
            ),
            ("query", "negatives"),
            {"query": _E, "negatives": Arg("float", extra_dim_ok=True)},
            values=lambda: dict(query=r(N, D), negatives=r(5, D, seed=1)),
        ),
        "OnlineHardNegativeMixing": fn_case(
            lambda query, positive, hard_negatives: CN.OnlineHardNegativeMixing(2, 2)(
                query, positive, hard_negatives, generator=g()
            ),
            ("query", "positive", "hard_negatives"),
            {"query": _E, "positive": _ER, "hard_negatives": Arg("float", rows=True)},
            values=lambda: dict(
                query=r(N, D), positive=r(N, D, seed=1), hard_negatives=r(N, 2, D, seed=2)
            ),
        ),
        "SubclassBalancer": fn_case(
            lambda features, labels: CN.SubclassBalancer(min_size=2).fit(features, labels),
            ("features", "labels"),
            {"features": _E, "labels": _L},
            values=lambda: dict(features=r(8, D), labels=torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])),
            skip={
                ("features", "empty"): "see labels",
            },
        ),
        "TopKMiner": fn_case(
            lambda query, key, labels: CN.TopKMiner(k=2)(query, key, labels),
            ("query", "key", "labels"),
            {"query": _E, "key": _E, "labels": _L},
            values=_mine_values,
            skip={("query", "rows"): "fewer queries than keys is valid"},
        ),
        "adameow_info_nce": fn_case(
            CF.adameow_info_nce,
            ("a", "z", "weights"),
            {"a": _E, "z": _ER, "weights": Arg("float", rows=True), "temperature": _T},
            values=lambda: dict(
                a=r(N, D),
                z=r(N, D, seed=1),
                weights=torch.rand(N, N, generator=g()),
                temperature=0.5,
            ),
        ),
        "apply_filter": fn_case(
            CN.apply_filter,
            ("indices", "drop"),
            {"indices": Arg("index", size=5, neg_ok=True), "drop": Arg("mask", rows=True)},
            values=lambda: dict(
                indices=torch.tensor([[0, 1], [1, 2], [2, 3], [3, 4]]),
                drop=torch.tensor([[True, False]] * N),
            ),
            skip={("indices", "out-of-range"): "the candidate count is unknown"},
        ),
        "cluster_features": fn_case(
            CN.cluster_features,
            ("features",),
            {"features": _E},
            kw={"n_clusters": 2, "n_init": 1},
            values=lambda: dict(features=r(N, D)),
        ),
        "combine_stage_labels": fn_case(
            CN.combine_stage_labels,
            ("stage_labels",),
            {"stage_labels": Arg("views")},
            kw={"n_clusters": 2},
            values=lambda: dict(stage_labels=[_labels(), _labels()]),
        ),
        "community_centroids": fn_case(
            CN.community_centroids,
            ("h", "assignment"),
            {"h": _E, "assignment": Arg("index", rows=True, size=2)},
            kw={"n_communities": 2},
            values=lambda: dict(h=r(N, D), assignment=_labels()),
        ),
        "community_contrast": fn_case(
            CF.community_contrast,
            ("h1", "h2", "assignment1", "assignment2"),
            {
                "h1": _E,
                "h2": _ER,
                "assignment1": Arg("index", rows=True, size=2),
                "assignment2": Arg("index", rows=True, size=2),
                "temperature": _T,
            },
            kw={"n_communities": 2},
            values=lambda: dict(
                h1=r(N, D),
                h2=r(N, D, seed=1),
                assignment1=_labels(),
                assignment2=_labels(),
                temperature=0.2,
            ),
        ),
        "community_strength": fn_case(
            CN.community_strength,
            ("edge_index", "communities"),
            {"edge_index": Arg("index", size=N), "communities": Arg("index", size=2)},
            values=lambda: dict(
                edge_index=torch.tensor([[0, 1, 2], [1, 2, 3]]), communities=_labels()
            ),
            skip={("communities", "out-of-range"): "the community count is inferred"},
        ),
        "community_weights": fn_case(
            CN.community_weights,
            ("centroids",),
            {"centroids": _E},
            kw={"gamma": 0.5},
            values=lambda: dict(centroids=r(2, D)),
        ),
        "gather_negatives": fn_case(
            CN.gather_negatives,
            ("candidates", "mined"),
            {"candidates": _E, "mined": Arg("index", size=N)},
            values=lambda: dict(candidates=r(N, D), mined=torch.tensor([[1], [2], [3], [0]])),
        ),
        "histogram_propensity": fn_case(
            CN.histogram_propensity,
            ("surface",),
            {"surface": Arg("real")},
            values=lambda: dict(surface=torch.tensor([1.0, 2, 3, 4])),
        ),
        "info_nce_with_negatives": fn_case(
            CF.info_nce_with_negatives,
            ("query", "key"),
            {
                "query": _E,
                "key": _E,
                "queue": _E,
                "extra": Arg("float", rows=True),
                "extra_valid": Arg("mask", rows=True),
                "weights": Arg("real", rows=True),
                "temperature": _TR,
            },
            values=lambda: dict(
                query=r(N, D),
                key=r(N, D, seed=1),
                queue=r(3, D, seed=2),
                extra=r(N, 2, D, seed=3),
                extra_valid=torch.ones(N, 2, dtype=torch.bool),
                weights=torch.ones(N, N),
                temperature=0.1,
            ),
            skip={("key", "rows"): "M < N raises; checked with the name"},
        ),
        "interpolate_negatives": fn_case(
            CN.interpolate_negatives,
            ("negatives", "lam", "permutation"),
            {"negatives": _E, "permutation": Arg("index", rows=True, size=N)},
            values=lambda: dict(negatives=r(N, D), lam=0.5, permutation=torch.tensor([1, 2, 3, 0])),
        ),
        "margin_filter": fn_case(
            CN.margin_filter,
            ("scores", "positive_scores"),
            {"scores": _FILTER_SCORES, "positive_scores": _POS_SCORES},
            kw={"margin": 0.1},
            values=_scores,
        ),
        "meow_cluster_labels": fn_case(
            CN.meow_cluster_labels,
            ("features",),
            {"features": _E},
            kw={"n_clusters": (2,), "n_init": 1},
            values=lambda: dict(features=r(N, D)),
        ),
        "mined_info_nce": fn_case(
            CF.mined_info_nce,
            ("query", "key", "mined"),
            {
                "query": _E,
                "key": _E,
                "mined": Arg("index", rows=True, size=N, neg_ok=True),
                "temperature": _TR,
            },
            values=lambda: dict(
                query=r(N, D),
                key=r(N, D, seed=1),
                mined=torch.tensor([[1], [2], [3], [0]]),
                temperature=0.1,
            ),
            skip={("key", "rows"): "M < N raises; checked with the name"},
        ),
        "relative_margin_filter": fn_case(
            CN.relative_margin_filter,
            ("scores", "positive_scores"),
            {"scores": _FILTER_SCORES, "positive_scores": _POS_SCORES},
            kw={"relative_margin": 0.05},
            values=_scores,
        ),
        "sbcl": fn_case(
            CF.sbcl,
            ("features", "labels", "subclass_labels"),
            {"features": Arg("float"), "labels": _L, "subclass_labels": _L, "temperature": _T},
            values=lambda: dict(
                features=r(N, 2, D),
                labels=_labels(),
                subclass_labels=torch.tensor([0, 1, 2, 2]),
                temperature=0.1,
            ),
        ),
        "team_up": fn_case(
            CF.team_up,
            ("h1", "h2", "strength"),
            {"h1": _E, "h2": _ER, "strength": Arg("float", rows=True), "temperature": _T},
            kw={"gamma": 0.5},
            values=lambda: dict(
                h1=r(N, D), h2=r(N, D, seed=1), strength=r(N, seed=2), temperature=0.2
            ),
        ),
        "threshold_filter": fn_case(
            CN.threshold_filter,
            ("scores",),
            {"scores": _FILTER_SCORES},
            kw={"max_score": 0.5},
            values=lambda: dict(scores=r(N, 5)),
        ),
        "weight_function": fn_case(
            lambda weights: CN.weight_function(weights, N, N),
            ("weights",),
            {"weights": Arg("real", rows=True)},
            values=lambda: dict(weights=torch.ones(N, N)),
        ),
        # positives
        "FeatureTransformation": fn_case(
            lambda query, key, queue: CP.FeatureTransformation()(query, key, queue, generator=g()),
            ("query", "key", "queue"),
            {"query": _E, "key": _ER, "queue": _E},
            values=lambda: dict(query=u(N, D), key=u(N, D, seed=1), queue=u(5, D, seed=2)),
        ),
        "HaLP": fn_case(
            lambda bank: CP.HaLP(n_prototypes=2, n_positives=3, n_candidates=1).fit_prototypes(
                bank, generator=g()
            ),
            ("bank",),
            {"bank": _E},
            values=lambda: dict(bank=u(6, D)),
        ),
        "Hallucinator": fn_case(
            lambda q_raw, key: CP.Hallucinator(dim=D, hidden=4)(q_raw, key, g()),
            ("q_raw", "key"),
            {"q_raw": _E, "key": _ER},
            values=lambda: dict(q_raw=r(N, D), key=u(N, D, seed=1)),
        ),
        "Metrix": fn_case(
            lambda embeddings, labels: CP.Metrix()(embeddings, labels, g()),
            ("embeddings", "labels"),
            {"embeddings": _E, "labels": _L},
            values=lambda: dict(embeddings=u(N, D), labels=_labels()),
        ),
        "MultimodalMixup": fn_case(
            lambda x: CP.MultimodalMixup().mix(x, g()),
            ("x",),
            {"x": _E},
            values=lambda: dict(x=r(N, D)),
        ),
        "SupReMixPairs": fn_case(
            lambda features, labels: CP.SupReMixPairs(window=2.0)(features, labels, g()),
            ("features", "labels"),
            {"features": Arg("float"), "labels": Arg("real", rows=True)},
            values=lambda: dict(features=u(N, 2, D), labels=torch.tensor([1.0, 2, 2, 3])),
        ),
        "extrapolate_positives": fn_case(
            CP.extrapolate_positives,
            ("query", "key"),
            {"query": _E, "key": _ER},
            kw={"lam": 1.5},
            values=lambda: dict(query=u(N, D), key=u(N, D, seed=1)),
        ),
        "halp_t_max": fn_case(
            CP.halp_t_max,
            ("key", "p_own", "p_target"),
            {"key": _E, "p_own": _ER, "p_target": _ER},
            values=lambda: dict(key=u(N, D), p_own=u(N, D, seed=1), p_target=u(N, D, seed=2)),
            skip={
                (n, "extra-dim"): "leading dimensions broadcast"
                for n in ("key", "p_own", "p_target")
            },
        ),
        "mixup_contrastive": fn_case(
            CF.mixup_contrastive,
            ("x_mixed", "y", "perm", "mix"),
            {
                "x_mixed": _E,
                "y": _ER,
                "perm": Arg("index", rows=True, size=N),
                "mix": Arg("float", rows=True),
                "temperature": _T,
            },
            values=lambda: dict(
                x_mixed=r(N, D),
                y=r(N, D, seed=1),
                perm=torch.tensor([1, 2, 3, 0]),
                mix=torch.full((N,), 0.7),
                temperature=0.1,
            ),
        ),
        "slerp": fn_case(
            CP.slerp,
            ("start", "end", "t"),
            {"start": _E, "end": _ER, "t": Arg("float", rows=True)},
            values=lambda: dict(start=u(N, D), end=u(N, D, seed=1), t=torch.full((N,), 0.5)),
            skip={(n, "extra-dim"): "leading dimensions broadcast" for n in ("start", "end", "t")},
        ),
        "spherical_kmeans": fn_case(
            CP.spherical_kmeans,
            ("x",),
            {"x": _E},
            kw={"n_clusters": 2},
            values=lambda: dict(x=u(N, D)),
        ),
        "supremix_weight": fn_case(
            CP.supremix_weight,
            ("delta",),
            {"delta": Arg("real")},
            values=lambda: dict(delta=torch.tensor([0.0, 1.0, -2.0])),
            skip={
                ("delta", "extra-dim"): "element-wise: any shape",
                ("delta", "empty"): "element-wise: any shape",
            },
        ),
    }
)

# module twins of the InfoNCE-family objectives whose functional cases are defined above
for _name, _fn in (
    ("InfoNCEWithNegatives", "info_nce_with_negatives"),
    ("MinedInfoNCE", "mined_info_nce"),
    ("MixupContrastive", "mixup_contrastive"),
):
    _cls = getattr(CL, _name)
    CASES[_name] = CASES[_fn].rebuild(lambda *a, _cls=_cls, **k: _cls()(*a, **k))

# module twins of the weighting-family objectives whose functional cases are defined above
for _name, _fn in (
    ("AdaMEOWInfoNCE", "adameow_info_nce"),
    ("CommunityContrast", "community_contrast"),
    ("SBCL", "sbcl"),
    ("TeamUp", "team_up"),
):
    _cls = getattr(CL, _name)
    CASES[_name] = CASES[_fn].rebuild(lambda *a, _cls=_cls, **k: _cls()(*a, **k))

CASES.update(
    {
        # memory (tensor-taking entry points)
        "Queue": fn_case(
            lambda keys, labels: CM.Queue(8, D, labels=True).enqueue(keys, labels),
            ("keys", "labels"),
            {"keys": _E, "labels": _L},
            values=lambda: dict(keys=r(N, D), labels=_labels()),
        ),
        "CrossBatchMemory": fn_case(
            lambda embeddings, labels: CM.CrossBatchMemory(8, D)(embeddings, labels),
            ("embeddings", "labels"),
            {"embeddings": _E, "labels": _L},
            values=lambda: dict(embeddings=r(N, D), labels=_labels()),
        ),
        "DynamicClusteredMemory": fn_case(
            lambda z: CM.DynamicClusteredMemory(8, D, num_clusters=2, topk=1)(z, 0),
            ("z",),
            {"z": _E},
            values=lambda: dict(z=r(N, D)),
        ),
        "sinkhorn_equipartition": fn_case(
            CM.sinkhorn_equipartition,
            ("scores",),
            {"scores": Arg("float")},
            values=lambda: dict(scores=r(N, 3)),
        ),
        "optimal_transport_align": fn_case(
            CM.optimal_transport_align,
            ("support", "support_labels", "query"),
            {"support": _E, "support_labels": _L, "query": _E},
            values=lambda: dict(support=r(N, D), support_labels=_labels(), query=r(3, D, seed=1)),
        ),
    }
)

EXCLUDED = {
    "matryoshka": "a wrapper: its embeddings are checked by the wrapped objective; dims, weights "
    "and objective checks in tests/test_objectives_ranking.py",
    "Matryoshka": "the module twin of matryoshka (see above)",
    "LogitScale": "no tensor input (forward() returns the scale); init_temperature is checked in "
    "test_validation",
    "MinedNegatives": "a result container (dataclass) built by TopKMiner",
    "SupReMixBatch": "a result container (dataclass) built by SupReMixPairs",
    "team_up_gamma": "a schedule of plain numbers (epoch -> gamma), no tensor input",
    "MomentumEncoder": "wraps a module (no tensor input of its own); momentum checked on init",
    "momentum_update": "takes modules, not tensors; momentum checked by check_range",
    "momentum_schedule": "a schedule of plain numbers (step -> momentum), no tensor input",
    "MemoryBatch": "a result container built by CrossBatchMemory",
    "OpTAResult": "a result container built by optimal_transport_align",
}


def _public():
    out = {}
    for mod in (CF, CL, CN, CP, CM):
        for n in mod.__all__:
            obj = getattr(mod, n)
            if callable(obj) and (mod is not CL or inspect.isclass(obj)):
                out[_canonical(n, obj)] = obj
    return out


def test_every_public_callable_is_swept():
    public = _public()
    missing = sorted(set(public) - set(CASES) - set(EXCLUDED))
    assert not missing, (
        f"add these public callables to CASES (or EXCLUDED with a reason): {missing}"
    )
    stale = sorted((set(CASES) | set(EXCLUDED)) - set(public))
    assert not stale, f"CASES/EXCLUDED name callables that are not public: {stale}"


def _bad_cases(case: Case):
    for name, a in case.args.items():
        valid = case.values()[name]
        for label, bad in _variants(a, valid):
            if (name, label) not in case.skip:
                yield name, a.name or name, label, bad


def _count():
    return sum(len(list(_bad_cases(c))) for c in CASES.values())


@pytest.mark.parametrize("name", sorted(CASES))
def test_valid_inputs_run(name):
    CASES[name].call(CASES[name].values())


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_inputs_raise_named_errors(name):
    case = CASES[name]
    failures = []
    for arg, needle, label, bad in _bad_cases(case):
        v = case.values()
        v[arg] = bad
        try:
            case.call(v)
        except (ValueError, TypeError) as err:
            if needle not in str(err):
                failures.append(f"{arg}/{label}: message lacks {needle!r}: {err}")
        except Exception as err:  # noqa: BLE001 - any other error type is a failure
            failures.append(f"{arg}/{label}: {type(err).__name__}: {err}")
        else:
            failures.append(f"{arg}/{label}: accepted silently")
    assert not failures, "\n".join(failures)


# ------------------------------------------------------------------ the cases named in issue 11


def test_mined_info_nce_temperature_shape_and_per_query_values():
    q, k = r(N, D), r(N, D, seed=1)
    mined = torch.tensor([[1, 2], [2, -1], [3, 0], [0, 1]])
    with pytest.raises(ValueError, match="temperature"):  # used to broadcast over the columns
        CF.mined_info_nce(q, k, mined, temperature=torch.full((3,), 0.1))
    with pytest.raises(ValueError, match="temperature"):
        CF.mined_info_nce(q, k, mined, temperature=torch.full((N, 1), 0.1))
    t = torch.tensor([0.05, 0.1, 0.2, 0.5])
    rows = CF.mined_info_nce(q, k, mined, temperature=t, reduction="none")
    for i in range(N):  # row i with (N,) temperatures = row i with the scalar t[i]
        one = CF.mined_info_nce(q, k, mined, temperature=float(t[i]), reduction="none")
        torch.testing.assert_close(rows[i], one[i])


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_max_margin_contrastive_rejects_nonfinite_logits(bad):
    logits = r(2, 3, 5)
    logits[1, 2, 0] = bad
    ids = torch.tensor([[0, 1, 2], [3, 4, 0]])
    with pytest.raises(ValueError, match="logits"):
        CF.max_margin_contrastive(logits, ids, ids.flip(1))


def test_max_margin_contrastive_rejects_an_empty_batch_and_bad_ids():
    ids = torch.zeros(0, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="logits"):  # used to return NaN (a mean over nothing)
        CF.max_margin_contrastive(r(0, 3, 5), ids, ids)
    ids = torch.tensor([[0, 1, 2], [3, 4, 0]])
    with pytest.raises(ValueError, match=r"negative holds 1 indices outside \[0, 5\)"):
        CF.max_margin_contrastive(r(2, 3, 5), ids, torch.tensor([[0, 1, 2], [3, 9, 0]]))
    # ignore_index (padding) stays valid
    pad = torch.tensor([[0, 1, -100], [3, 4, 0]])
    assert torch.isfinite(CF.max_margin_contrastive(r(2, 3, 5), pad, pad.flip(0)))


def test_group_whiten_raises_like_its_module_when_groups_are_too_small():
    x = r(3, D)  # 3 rows <= D / G = 3 channels per group: singular covariance, NaN before
    with pytest.raises(ValueError, match="x needs more than D/num_groups = 3 rows"):
        CF.group_whiten(x, 2)
    with pytest.raises(ValueError, match="each whitened block needs more than"):
        CL.ShuffledGroupWhitening(D, num_groups=2, num_views=1).eval()(x)
    assert torch.isfinite(CF.group_whiten(x, 2, eps=1e-3)).all()  # a ridge makes it regular
    with pytest.raises(ValueError, match="num_groups"):
        CF.group_whiten(r(8, D), 4)
    with pytest.raises(ValueError, match="perm"):
        CF.group_whiten(r(8, D), 2, torch.zeros(D, dtype=torch.long))


def test_pamc_rejects_zero_rows():
    z = r(N, D)
    z[2] = 0  # its cosine is 0/0: the loss was NaN
    with pytest.raises(ValueError, match="z has 1 all-zero rows"):
        CF.pamc(z, torch.softmax(r(N, 2), 1), _adjacency())
    with pytest.raises(ValueError, match="z needs at least 1 rows"):
        CF.pamc(r(0, D), r(0, 2), torch.zeros(0, 0))


def test_supremix_labels_must_be_real_numbers():
    # SupReMix is a regression loss: float labels (targets) are its documented input
    f = r(N, 2, D)
    assert torch.isfinite(CF.supremix(f, torch.tensor([1.0, 2.5, 2.5, 3.0])))
    for bad in (
        torch.ones(N, dtype=torch.complex64),
        torch.ones(N, dtype=torch.bool),
        [1.0, 2.0, 2.0, 3.0],
    ):
        with pytest.raises(ValueError, match="labels"):
            CF.supremix(f, bad)


@pytest.mark.parametrize(
    "fn",
    [
        lambda s, p: CN.threshold_filter(s, max_score=0.5),
        lambda s, p: CN.margin_filter(s, p, 0.1),
        lambda s, p: CN.relative_margin_filter(s, p, 0.05),
        lambda s, p: CN.FalseNegativeFilter(max_score=0.9, relative_margin=0.05)(s, p),
    ],
)
def test_false_negative_filters_reject_nan_scores(fn):
    s, p = r(N, 5), torch.full((N,), 0.5)
    s_nan = s.clone()
    s_nan[1, 3] = NAN  # NaN > bound is False: the candidate was silently kept as a negative
    with pytest.raises(ValueError, match="scores contains 1 NaN"):
        fn(s_nan, p)
    s_inf = s.clone()
    s_inf[1, 3] = -INF  # a masked slot is a valid score
    fn(s_inf, p)


def test_margin_filters_reject_nan_positive_scores():
    p = torch.tensor([0.5, NAN, 0.5, 0.5])
    with pytest.raises(ValueError, match="positive_scores contains 1 NaN"):
        CN.margin_filter(r(N, 5), p, 0.1)
    with pytest.raises(ValueError, match="positive_scores"):
        CN.TopKMiner(k=2, absolute_margin=0.1)(r(N, D), r(N, D, seed=1), positive_scores=p)


@pytest.mark.parametrize(
    "call,needle",
    [
        (
            lambda: CF.simctg_loss(r(2, 3, D), r(2, 3, 5), torch.tensor([[0, 1, 7], [0, 1, 2]])),
            "labels holds 1 indices outside [0, 5) or -100",
        ),
        (
            lambda: CN.interpolate_negatives(r(N, D), 0.5, torch.tensor([0, 1, 2, 4])),
            "permutation holds 1 indices outside [0, 4)",
        ),
        (
            lambda: CF.mixup_contrastive(
                r(N, D), r(N, D), torch.tensor([0, 1, 2, -3]), torch.ones(N)
            ),
            "perm holds 1 indices outside",
        ),
        (
            lambda: CF.mined_info_nce(r(N, D), r(N, D), torch.tensor([[1], [2], [3], [4]])),
            "mined holds 1 indices outside [0, 4) or -1",
        ),
        (
            lambda: CN.community_strength(torch.tensor([[0, 1], [1, 2]]), torch.tensor([0, -1, 1])),
            "communities holds 1 indices outside",
        ),
        (
            lambda: CN.CommunityNegativeWeights(torch.ones(2, 2), torch.tensor([0, 2])),
            "row_communities holds 1 indices outside [0, 2)",
        ),
    ],
)
def test_out_of_range_indices_name_the_argument(call, needle):
    with pytest.raises(ValueError) as err:  # an IndexError (or a silent result) before
        call()
    assert needle in str(err.value)


@pytest.mark.parametrize(
    "call,needle",
    [
        (lambda: CF.group_whiten([[1.0] * D] * 8, 2), "x must be a torch.Tensor, got list"),
        (lambda: CL.CLIPLoss()([[1.0] * D] * N, r(N, D)), "image must be a torch.Tensor, got list"),
        (
            lambda: CL.AMCL(dim=D, num_heads=1)([[1.0] * D] * N, r(N, 1, D)),
            "z1 must be a torch.Tensor, got list",
        ),
        (lambda: CP.supremix_weight([1.0, 2.0]), "delta must be a torch.Tensor, got list"),
        (lambda: CN.BadPairMiner()([0, 1], torch.ones(2)), "ids must be a torch.Tensor, got list"),
        (
            lambda: CP.slerp([[1.0, 0.0]], torch.ones(1, 2), torch.ones(1)),
            "start must be a torch.Tensor, got list",
        ),
    ],
)
def test_a_list_instead_of_a_tensor_names_the_argument(call, needle):
    with pytest.raises((ValueError, TypeError)) as err:  # AttributeError (or accepted) before
        call()
    assert needle in str(err.value)
