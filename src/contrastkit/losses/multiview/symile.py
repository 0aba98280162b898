"""Symile: a higher-order contrastive objective for any number of modalities M >= 2
(Saporta et al., NeurIPS 2024, arXiv:2411.01053; official code rajesh-lab/symile,
``symile/loss.py``). The formula and options are in :class:`Symile`'s docstring.

Engine: each anchor modality is a row-wise softmax over candidates built in O(N d) with autograd
(Hadamard products), so it runs on the engine (single sweep); the positive is a side input that
replaces the self column (self excluded from the sweep, added back with ``logaddexp``).
Exact under a process group: every rank builds its candidates from every rank's modalities
(gathered with their gradients) with permutations of the global batch (rank 0's draw).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._validation import check_compatible, check_embeddings, check_reduction
from ...engine import LSETerm, PairMask, RowSpec
from ...objective import (
    ScaledObjective,
    engine_args,
    exact_objective,
    gather_rows,
    global_total,
    kappa,
    objective_group,
    prepare,
    row_offset,
    row_weight,
    run,
)

__all__ = ["symile", "Symile"]

SAMPLING = ("n", "n_squared")


def _modalities(representations: Union[tuple, list, Tensor]) -> list:
    # symile(a, b, c), or one sequence / (M, N, d) tensor: symile([a, b, c])
    if len(representations) == 1 and (
        isinstance(representations[0], (list, tuple))
        or (isinstance(representations[0], Tensor) and representations[0].dim() == 3)
    ):
        representations = representations[0]
    if isinstance(representations, Tensor):
        check_embeddings("representations", representations, ndim=3)
        reps = list(representations.unbind(0))
    elif isinstance(representations, (list, tuple)):
        reps = list(representations)
        for m, r in enumerate(reps):
            check_embeddings(f"representations[{m}]", r)
            if m:
                check_compatible("representations[0]", reps[0], f"representations[{m}]", r, True)
    else:
        raise ValueError(
            "representations must be a sequence of (N, d) tensors or a tensor (M, N, d), "
            f"got {type(representations).__name__}"
        )
    if len(reps) < 2:
        raise ValueError(f"representations must hold at least 2 modalities, got {len(reps)}")
    return reps


def _permutations(permutations, M: int, N: int, generator, device) -> list:
    if permutations is None:
        out = []
        for _ in range(M):
            perms = [torch.randperm(N, generator=generator) for _ in range(M - 1)]
            out.append([p.to(device) for p in perms])
        return out
    if isinstance(permutations, str):
        if permutations != "identity":
            raise ValueError(
                f"permutations must be None, 'identity' or a list, got {permutations!r}"
            )
        ar = torch.arange(N, device=device)
        return [[ar] * (M - 1) for _ in range(M)]
    if len(permutations) != M or any(len(p) != M - 1 for p in permutations):
        raise ValueError(
            f"permutations must hold, for each of the M={M} anchor modalities, M - 1={M - 1} "
            "index tensors"
        )
    ref = torch.arange(N)
    for m, perms in enumerate(permutations):
        for o, p in enumerate(perms):
            if not isinstance(p, Tensor) or p.shape != (N,) or p.is_floating_point():
                raise ValueError(f"permutations[{m}][{o}] must be a long tensor of shape ({N},)")
            if not torch.equal(torch.sort(p.cpu()).values, ref):
                raise ValueError(f"permutations[{m}][{o}] is not a permutation of 0..{N - 1}")
    return [[p.to(device) for p in perms] for perms in permutations]


class _RowProduct(torch.autograd.Function):
    """``prod_o r_o[p_o]`` (elementwise; ``p_o = None``: the rows in order) of (N, d) tensors,
    keeping only the factors (alive anyway) for the backward: the chain ``r_1[p_1] * r_2[p_2]
    * ...`` in autograd keeps every gathered factor and partial product, O(M N d) per call."""

    @staticmethod
    def forward(ctx, perms, *rs):
        out = None
        for r, p in zip(rs, perms):
            if out is None:
                out = r.clone() if p is None else r[p]
            else:
                out.mul_(r if p is None else r[p])
        ctx.perms = perms
        ctx.save_for_backward(*rs)
        return out

    @staticmethod
    def backward(ctx, g):
        rs, perms = ctx.saved_tensors, ctx.perms
        grads: list[Optional[Tensor]] = []
        for o, (r, p) in enumerate(zip(rs, perms)):
            if not ctx.needs_input_grad[o + 1]:
                grads.append(None)
                continue
            prod = g.clone()
            for q, (s, ps) in enumerate(zip(rs, perms)):
                if q != o:
                    prod.mul_(s if ps is None else s[ps])
            # scatter back through the gather (index_add: correct for any index)
            grads.append(prod if p is None else torch.zeros_like(r).index_add_(0, p, prod))
        return (None, *grads)


@exact_objective
def symile(
    *representations: Union[Tensor, Sequence[Tensor]],
    scale=None,
    temperature=None,
    negative_sampling: str = "n",
    permutations=None,
    generator: Optional[torch.Generator] = None,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """Symile loss of M >= 2 modalities ``symile(r_1, ..., r_M)`` (or one sequence / (M, N, d)
    tensor); see :class:`Symile`."""
    if scale is None and temperature is None:
        temperature = 0.07
    eng = engine_args(chunk_size, backend)
    check_reduction(reduction)
    if negative_sampling not in SAMPLING:
        raise ValueError(f"negative_sampling must be one of {SAMPLING}, got {negative_sampling!r}")
    reps = _modalities(representations)
    M, N = len(reps), reps[0].shape[0]
    if negative_sampling == "n_squared" and M != 3:
        raise ValueError(
            f"negative_sampling='n_squared' is implemented for M=3 modalities (N^2 candidates), "
            f"got M={M}"
        )
    group = objective_group()  # None without a process group
    R = [prepare(r, normalize) for r in reps]
    t = kappa(R[0], temperature, scale, group=group)
    if t.dim() != 0:
        raise ValueError(f"scale/temperature must be a scalar, got shape {tuple(t.shape)}")
    # every rank's modalities (gradients go back to their ranks); this rank's rows are global
    # rows offset .. offset + N - 1
    R_all = [gather_rows(r, f"representations[{m}]", group=group) for m, r in enumerate(R)]
    N_all, offset = R_all[0].shape[0], row_offset(N, group=group)
    if negative_sampling == "n":
        perms = _permutations(permutations, M, N_all, generator, R[0].device)
        if group is not None:  # one draw for the group: rank 0's permutations
            stacked = torch.stack([torch.stack(p) for p in perms])  # (M, M - 1, N_all)
            stacked = gather_rows(stacked, "permutations", group=group)[:M]
            perms = [list(p.unbind(0)) for p in stacked.unbind(0)]
    elif permutations is not None:
        raise ValueError("permutations only apply to negative_sampling='n'")
    # the positive MIP of every row, shared by all anchor modalities
    pos = _RowProduct.apply([None] * M, *R).sum(-1) * t
    # the rows of every anchor modality are reduced; "mean" and "sum" then average over the M
    # anchor modalities, "none" keeps the (M, N) rows
    w = row_weight(reduction, N, group=group) * (1.0 if reduction == "none" else 1.0 / M)
    rows = []
    for m in range(M):
        others = [R_all[o] for o in range(M) if o != m]
        if negative_sampling == "n":
            cands = _RowProduct.apply(list(perms[m]), *others)
            spec = RowSpec(
                terms=(LSETerm(exclude=PairMask(self_offset=offset)),),
                # log(exp(pos) + sum exp(u)) - pos, without cancellation when pos dominates
                row_fn=lambda st, sd: w * F.softplus(cast(Tensor, st.lse)[0] - sd["pos"]),
                row_side={"pos": pos},
            )
        else:
            y, z = others
            cands = torch.cat([y * torch.roll(z, s, dims=0) for s in range(N_all)])
            # column i (shift 0) is row i's positive: the engine reads it from the LSE's logits
            spec = RowSpec(
                row_fn=lambda st, sd: w * st.ce,
                positive=torch.arange(offset, offset + N, device=pos.device),
            )
        # this rank's rows against the global candidates, summed over the group below
        rows.append(run(R[m], cands, spec, t, reduction, eng, group=None))
    if reduction == "none":
        return global_total(torch.stack(rows), group=group)
    return global_total(sum(rows), group=group)


class Symile(ScaledObjective, functional=symile, init_temperature=0.07, learnable=True):
    """Symile: a contrastive loss for any number of modalities M >= 2 that captures their
    joint (higher-order) dependence, not only pairwise agreement as CLIP applied to pairs.

    The similarity is the multilinear inner product ``MIP(a, b, c, ...) = sum_k a_k b_k c_k``.
    For each anchor modality ``m``, row ``i`` is contrasted against candidates ``c_j`` built from
    the other modalities, with the module's logit scale ``t``::

        l^m_i = -t MIP(r_1[i], ..., r_M[i])
                + log( exp(t MIP(r_1[i], ..., r_M[i])) + sum_{j != i} exp(t <r_m[i], c_j>) )
        loss  = mean_m mean_i l^m_i

    ``negative_sampling="n"`` (default): ``c_j = prod_{o != m} r_o[pi_o(j)]`` with one random
    permutation per non-anchor modality, drawn per anchor modality in the official order from
    ``generator`` (default: torch's global RNG, so a seed reproduces the official loss);
    ``permutations`` fixes them (``"identity"``, or per anchor modality a list of M - 1 index
    tensors). Column ``i``'s product is replaced by the positive, as the official code. With
    M = 2 and identity permutations this is CLIP; with M = 2 and random permutations row i's
    true partner reappears as a negative (use M >= 3). ``negative_sampling="n_squared"``
    (M = 3): the candidates are all N^2 products ``y_a * z_b`` (O(N^2 d) memory by nature).

    Exact under a process group: the candidates are built from every rank's modalities with
    permutations of the global batch (rank 0's draw when ``permutations`` is not given).

    Args:
        init_temperature (float): initial ``1 / t``, default 0.07 (logit scale
            ``log(1 / 0.07)``, the official initialisation).
        learnable (bool): learn the logit scale (default ``True``, official) or keep it fixed.
        max_logit_scale (float): clamp of ``t`` (default 100).
        negative_sampling (str): ``"n"`` (default) or ``"n_squared"`` (M = 3).
        permutations: ``None`` (default: drawn at every call), ``"identity"``, or fixed index
            tensors (see above); usually given per call, ``loss(a, b, c, permutations=...)``.
        generator (torch.Generator, optional): the RNG of the permutations (default: global).
        reduction (str): ``"mean"`` (default, official), ``"sum"`` (over rows, mean over anchor
            modalities) or ``"none"`` (``(M, N)`` row losses per anchor modality).
        normalize (bool): L2-normalise the embeddings (default ``True``; the official loss takes
            the model's normalised outputs as given).
        chunk_size (int, optional): engine tile width (default: automatic).
        backend (str): engine path, ``"auto"`` (default), ``"dense"`` or ``"tiled"``.

    Inputs:
        ``*representations``: M float tensors ``(N, d)`` (or one sequence of them, or one
        tensor ``(M, N, d)``); row ``i`` of every modality is one sample: the M-tuple of rows
        ``i`` is the positive, tuples mixing rows of different samples are the negatives.

    Example::

        import torch
        import contrastkit as ck

        audio, image, text = torch.randn(16, 8), torch.randn(16, 8), torch.randn(16, 8)
        loss = ck.Symile(init_temperature=0.07)(audio, image, text)

    See also:
        :class:`contrastkit.CLIP` (two modalities), :class:`MVInfoNCE` and :class:`MVDHEL`
        (pairwise agreement of many views).

    References:
        Saporta, Puli, Goldstein & Ranganath, "Contrasting with Symile: Simple Model-Agnostic
        Representation Learning for Unlimited Modalities", NeurIPS 2024, arXiv:2411.01053
        (official code: github.com/rajesh-lab/symile).
    """
