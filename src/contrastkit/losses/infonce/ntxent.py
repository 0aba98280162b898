"""NT-Xent (SimCLR; Chen et al. 2020): 2N views, self excluded, partner is the positive.

    l_i = -u_i,partner(i) + log sum_{j != i} exp(u_ij),   u = s / tau,  over the 2N views

Reduction: mean over the 2N anchors (PyTorch ports, lightly). The official TF code sums the two
directions and averages over N, i.e. twice this value: ``sum_directions=True`` reproduces it.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from ...engine import LSETerm, PairMask, RowSpec
from ...objective import (
    Objective,
    check_has_negatives,
    engine_args,
    exact_objective,
    kappa,
    objective_group,
    row_weight,
    run,
    two_views,
)

__all__ = ["nt_xent", "NTXent"]


@exact_objective
def nt_xent(
    z1: Tensor,
    z2: Tensor,
    *,
    temperature=0.1,
    sum_directions: bool = False,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """NT-Xent of two views ``z1``, ``z2`` (N, d), N >= 2 (N = 1 has no negative: a
    ``ValueError``); see :class:`NTXent`."""
    group = objective_group()
    eng = engine_args(chunk_size, backend)
    Z, partner = two_views(z1, z2, normalize, eng=eng)  # fp16/bf16 kept for the kernels
    check_has_negatives("z1", z1, "NT-Xent", group=group)
    n2 = Z.shape[0]
    k = kappa(Z, temperature, group=group)
    w = row_weight(reduction, n2, group=group) * (
        2.0 if sum_directions and reduction == "mean" else 1.0
    )
    # the engine reads u_i,partner(i) from the logits of the LSE: the two cancel exactly
    spec = RowSpec(
        terms=(LSETerm(exclude=PairMask(self_offset=0)),),
        row_fn=lambda st, sd: w * st.ce,
        positive=partner,
    )
    return run(Z, Z, spec, k, reduction, eng, group=group)


class NTXent(Objective, functional=nt_xent):
    """NT-Xent, SimCLR's normalised temperature-scaled cross-entropy over two views.

    The 2N views of N samples are stacked; each view's positive is the other view of the same
    sample and every other view (of every sample) is a negative; the view itself is left out.
    Reduced as PyTorch ports and lightly do (mean over the 2N anchors); the official TF code
    sums the two directions, i.e. twice this value (``sum_directions=True``). Exact under a
    process group.

    Formula::

        Z = cat(z1, z2) (2N, d),  u_ij = <z_i, z_j> / tau,  p(i) = (i + N) mod 2N
        l_i  = -u_i,p(i) + log sum_{j != i} exp(u_ij)
        loss = mean_i l_i          (sum_directions: 2 mean_i l_i)

    Args:
        temperature (float | Tensor, default 0.1): tau; 0.1 is the official SimCLR flag
            default (0.5 is common on CIFAR). A 0-dim tensor may be learnable.
        sum_directions (bool, default False): reproduce the official TF reduction (2x the mean
            over the 2N anchors).
        reduction (str, default "mean"): ``"mean"`` | ``"sum"`` | ``"none"`` (2N rows, view-major).
        normalize (bool, default True): L2-normalise the views.
        chunk_size (int | None, default None): engine tile size (None: automatic).
        backend (str, default "auto"): engine path, ``"auto"`` | ``"dense"`` | ``"tiled"``.

    Inputs:
        - ``z1``: (N, d) float, N >= 2; the first view of each sample.
        - ``z2``: (N, d) float; row ``i`` is the positive of ``z1[i]`` (and vice versa).
        - returns a scalar, or (2N,) with ``reduction="none"``.

    Example::

        import torch
        import contrastkit as ck

        z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
        loss = ck.NTXent(temperature=0.5)(z1, z2)

    See also:
        :class:`DCL` (positive left out of the denominator), :class:`SupCon` (labels),
        :class:`InfoNCE`.

    References:
        Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of
        Visual Representations", ICML 2020, arXiv:2002.05709.
    """
