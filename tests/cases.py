"""One table of objectives: how to build inputs, call contrastkit, and call the reference."""

from __future__ import annotations

import torch

import contrastkit as ck

import reference as ref


def _labels(n, g):
    # repeated and singleton classes
    lab = torch.randint(0, max(1, n // 3), (n,), generator=g)
    lab[-1] = 10_000
    return lab


def inputs(name, N, M, d, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype).requires_grad_()

    if name == "info_nce":
        return (r(N, d), r(M, d)), {}
    if name == "info_nce_queue":
        return (r(N, d), r(N, d), r(M, d)), {}
    if name in ("info_nce_private", "info_nce_sym_private"):
        return (r(N, d), r(N, d), r(N, 3, d)), {}
    if name == "info_nce_sym_queue":
        return (r(N, d), r(N, d), r(M, d)), {}
    if name in ("info_nce_sym", "clip", "siglip"):
        return (r(N, d), r(N, d)), {}
    if name == "cwcl":  # the first modality is frozen: no gradient flows into it
        return (r(N, d).detach(), r(N, d)), {}
    if name == "info_nce_rowtemp":
        t = (0.05 + torch.rand(N, generator=g, dtype=dtype)).requires_grad_()
        return (r(N, d), r(M, d), t), {}
    if name in ("nt_xent", "dcl", "dclw", "dclw_grad", "debiased", "hcl"):
        return (r(N, d), r(N, d)), {}
    if name == "supcon":
        return (r(N, 2, d),), {"labels": _labels(N, g)}
    if name == "supcon_1view":
        return (r(N, d),), {"labels": _labels(N, g)}
    if name == "mnrl":
        return (r(N, d), r(N, d), r(N, d), r(N, 2, d)), {}
    raise KeyError(name)


def call(name, args, kw, **eng):
    if name == "info_nce":
        return ck.info_nce(*args, temperature=0.1, **eng)
    if name == "info_nce_queue":
        return ck.info_nce(*args, temperature=0.1, **eng)
    if name == "info_nce_private":
        return ck.info_nce(*args, temperature=0.1, **eng)
    if name in ("info_nce_sym", "info_nce_sym_queue", "info_nce_sym_private"):
        return ck.info_nce(*args, temperature=0.1, symmetric=True, **eng)
    if name == "info_nce_rowtemp":
        q, k, t = args
        return ck.info_nce(q, k, temperature=t, **eng)
    if name == "nt_xent":
        return ck.nt_xent(*args, temperature=0.2, **eng)
    if name == "dcl":
        return ck.dcl(*args, temperature=0.2, **eng)
    if name == "dclw":
        return ck.dclw(*args, temperature=0.2, **eng)
    if name == "dclw_grad":
        return ck.dclw(*args, temperature=0.2, detach_weights=False, **eng)
    if name == "debiased":
        return ck.debiased_info_nce(*args, temperature=0.5, tau_plus=0.1, **eng)
    if name == "hcl":
        return ck.hard_negative_info_nce(*args, temperature=0.5, beta=1.0, tau_plus=0.1, **eng)
    if name in ("supcon", "supcon_1view"):
        return ck.supcon(*args, temperature=0.1, **kw, **eng)
    if name == "clip":
        return ck.clip(*args, scale=torch.tensor(14.0, dtype=args[0].dtype), **eng)
    if name == "siglip":
        return ck.siglip(*args, scale=10.0, bias=-10.0, **eng)
    if name == "cwcl":
        return ck.cwcl(*args, temperature=0.1, **eng)
    if name == "mnrl":
        return ck.multiple_negatives_ranking(*args, scale=20.0, **eng)
    raise KeyError(name)


def reference(name, args, kw):
    if name in ("info_nce", "info_nce_queue", "info_nce_private"):
        return ref.info_nce(*args, temperature=0.1).mean()
    if name in ("info_nce_sym", "info_nce_sym_queue", "info_nce_sym_private"):
        return ref.info_nce(*args, temperature=0.1, symmetric=True).mean()
    if name == "info_nce_rowtemp":
        q, k, t = args
        import torch.nn.functional as F

        logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).T / t[:, None]
        return F.cross_entropy(logits, torch.arange(q.shape[0]))
    if name == "nt_xent":
        return ref.nt_xent(*args, temperature=0.2).mean()
    if name == "dcl":
        return ref.dcl(*args, temperature=0.2).mean()
    if name in ("dclw", "dclw_grad"):
        w = ref.dclw_weights(*args, detach=name == "dclw")
        return ref.dcl(*args, temperature=0.2, weights=w).mean()
    if name == "debiased":
        return ref.debiased(*args, temperature=0.5, tau_plus=0.1).mean()
    if name == "hcl":
        return ref.debiased(*args, temperature=0.5, tau_plus=0.1, beta=1.0).mean()
    if name in ("supcon", "supcon_1view"):
        rows, has = ref.supcon(*args, labels=kw["labels"], temperature=0.1)
        return rows[has].sum() / max(int(has.sum()), 1)
    if name == "clip":
        return ref.clip(*args, scale=14.0)
    if name == "siglip":
        return ref.siglip(*args, scale=10.0, bias=-10.0).mean()
    if name == "cwcl":
        return ref.cwcl(*args, temperature=0.1).mean()
    if name == "mnrl":
        a, p, n1, n2 = args
        return ref.mnrl(a, p, n1, *n2.unbind(1), scale=20.0).mean()
    raise KeyError(name)


NAMES = [
    "info_nce",
    "info_nce_queue",
    "info_nce_private",
    "info_nce_sym",
    "info_nce_sym_queue",
    "info_nce_sym_private",
    "info_nce_rowtemp",
    "nt_xent",
    "dcl",
    "dclw",
    "dclw_grad",
    "debiased",
    "hcl",
    "supcon",
    "supcon_1view",
    "clip",
    "siglip",
    "cwcl",
    "mnrl",
]
