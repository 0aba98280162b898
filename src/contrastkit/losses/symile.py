"""Symile: a higher-order contrastive objective for any number of modalities M >= 2.

"Contrasting with Symile: Simple Model-Agnostic Representation Learning for Unlimited Modalities"
(Saporta et al., NeurIPS 2024); official code rajesh-lab/symile,
``symile/loss.py``. With the multilinear inner product ``MIP(a, b, c, ...) = sum_k a_k b_k c_k``
and logit scale ``t``, for each anchor modality ``m``::

    l^m_i = -t MIP(r_1[i], ..., r_M[i]) + log( exp(t MIP(r_1[i], ..., r_M[i]))
                                               + sum_{j != i} exp(t <r_m[i], c_j>) )
    loss  = mean_m mean_i l^m_i

``negative_sampling="n"`` (default): ``c_j = prod_{o != m} r_o[pi_o(j)]`` with one random
permutation per non-anchor modality, drawn per anchor modality in the official order (anchor
modality, then the others in order) from ``generator`` (default: torch's global RNG, so a seed
reproduces the official loss); ``permutations`` fixes them (``"identity"``, or per anchor a list
of M - 1 index tensors). Column ``i``'s product is replaced by the positive, as the official code.
With M = 2 and identity permutations this is CLIP; with M = 2 and random permutations row i's
true partner reappears as a negative (use M >= 3).
``negative_sampling="n_squared"`` (M = 3): candidates are all N^2 products ``y_a * z_b``
(O(N^2 d) memory by nature), the positive ``y_i * z_i`` among them.

Engine: each anchor modality is a row-wise softmax over candidates built in O(N d) with autograd
(Hadamard products), so it runs on the engine (single sweep); the positive is a side input that
replaces the self column (self excluded from the sweep, added back with ``logaddexp``).
Inputs are L2-normalised by default (``normalize=True``); the official loss takes the model's
(normalised) outputs as given.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import check_compatible, check_embeddings, check_reduction
from ..engine import LSETerm, PairMask, RowSpec
from ._common import engine_args, kappa, prepare, run
from .logit_scale import ScaledLoss

__all__ = ["symile", "Symile"]

SAMPLING = ("n", "n_squared")


def _modalities(representations) -> list:
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


def symile(
    representations: Union[Sequence[Tensor], Tensor],
    *,
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
    """Symile loss of M >= 2 modalities (N, d); see the module docstring.

    ``scale`` is the logit scale t (e.g. ``logit_scale.exp()``), or ``temperature`` = 1 / t
    (default 0.07). ``reduction``: ``"mean"`` (official), ``"sum"`` (over rows, mean over
    anchor modalities) or ``"none"`` ((M, N) row losses per anchor modality).
    """
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
    R = [prepare(r, normalize) for r in reps]
    t = kappa(R[0], temperature, scale)
    if t.dim() != 0:
        raise ValueError(f"scale/temperature must be a scalar, got shape {tuple(t.shape)}")
    if negative_sampling == "n":
        perms = _permutations(permutations, M, N, generator, R[0].device)
    elif permutations is not None:
        raise ValueError("permutations only apply to negative_sampling='n'")
    full = R[0]
    for r in R[1:]:
        full = full * r
    pos = full.sum(-1) * t  # the positive MIP of every row, shared by all anchor modalities
    w = {"mean": 1.0 / (M * N), "sum": 1.0 / M, "none": 1.0}[reduction]
    rows = []
    for m in range(M):
        others = [R[o] for o in range(M) if o != m]
        if negative_sampling == "n":
            cands = torch.ones_like(R[m])
            for r, p in zip(others, perms[m]):
                cands = cands * r[p]
            spec = RowSpec(
                terms=(LSETerm(exclude=PairMask(self_offset=0)),),
                # log(exp(pos) + sum exp(u)) - pos, without cancellation when pos dominates
                row_fn=lambda st, sd: w * F.softplus(st["lse"][0] - sd["pos"]),
                row_side={"pos": pos},
            )
        else:
            y, z = others
            cands = torch.cat([y * torch.roll(z, s, dims=0) for s in range(N)])
            # column i (shift 0) is row i's positive: the engine reads it from the LSE's logits
            spec = RowSpec(
                row_fn=lambda st, sd: w * st["ce"], positive=torch.arange(N, device=pos.device)
            )
        rows.append(run(R[m], cands, spec, t, reduction, eng))
    if reduction == "none":
        return torch.stack(rows)
    return sum(rows)


class Symile(ScaledLoss):
    """Symile module owning a learnable logit scale: ``forward(*representations)`` (M tensors
    (N, d), or one sequence / (M, N, d) tensor).

    Args:
        init_temperature: initial 1 / t (0.07, logit scale ``log(1 / 0.07)``).
        learnable: learn the scale (official default) or keep it fixed.
        max_logit_scale: clamp of t (100).
        negative_sampling: ``"n"`` (default) or ``"n_squared"`` (M = 3).
    """

    def __init__(
        self,
        init_temperature: float = 0.07,
        learnable: bool = True,
        max_logit_scale: float = 100.0,
        negative_sampling: str = "n",
        reduction: str = "mean",
        normalize: bool = True,
        chunk_size: Optional[int] = None,
        backend: str = "auto",
    ):
        if negative_sampling not in SAMPLING:
            raise ValueError(
                f"negative_sampling must be one of {SAMPLING}, got {negative_sampling!r}"
            )
        super().__init__(
            init_temperature, learnable, max_logit_scale, reduction, normalize, chunk_size, backend
        )
        self.negative_sampling = negative_sampling

    def forward(self, *representations, permutations=None, generator=None) -> Tensor:
        reps = representations[0] if len(representations) == 1 else list(representations)
        if isinstance(reps, (list, tuple)) and len(reps) < 2:
            raise ValueError(f"representations must hold at least 2 modalities, got {len(reps)}")
        ref = reps[0] if isinstance(reps, (list, tuple)) else reps
        if not isinstance(ref, Tensor):
            raise ValueError(
                "representations: Symile.forward takes M tensors (N, d) or one sequence of "
                f"them, got {type(ref).__name__}"
            )
        return symile(
            reps,
            negative_sampling=self.negative_sampling,
            permutations=permutations,
            generator=generator,
            **self.options(ref),
        )
