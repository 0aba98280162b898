"""NT-Xent (SimCLR; Chen et al. 2020): 2N views, self excluded, partner is the positive.

    l_i = -u_i,partner(i) + log sum_{j != i} exp(u_ij),   u = s / tau,  over the 2N views

Reduction: mean over the 2N anchors (PyTorch ports, lightly). The official TF code sums the two
directions and averages over N, i.e. twice this value: ``sum_directions=True`` reproduces it.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from ..engine import LSETerm, PairMask, RowSpec
from ._common import (
    FunctionalLoss,
    check_has_negatives,
    engine_args,
    exact_objective,
    kappa,
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
    """NT-Xent of two views ``z1``, ``z2`` (N, d), N >= 2; see :class:`NTXent`.

    N = 1 leaves each view only its partner, no negative: a ``ValueError``, not a loss of 0.
    """
    eng = engine_args(chunk_size, backend)
    Z, partner = two_views(z1, z2, normalize, eng=eng)  # fp16/bf16 kept for the kernels
    check_has_negatives("z1", z1, "NT-Xent")
    n2 = Z.shape[0]
    k = kappa(Z, temperature)
    w = row_weight(reduction, n2) * (2.0 if sum_directions and reduction == "mean" else 1.0)
    # the engine reads u_i,partner(i) from the logits of the LSE: the two cancel exactly
    spec = RowSpec(
        terms=(LSETerm(exclude=PairMask(self_offset=0)),),
        row_fn=lambda st, sd: w * st["ce"],
        positive=partner,
    )
    return run(Z, Z, spec, k, reduction, eng)


class NTXent(FunctionalLoss):
    """NT-Xent module: ``forward(z1, z2)`` with two (N, d) views of the same N samples.

    Args:
        temperature: tau; 0.1 is the official SimCLR flag default (0.5 is common on CIFAR).
        sum_directions: reproduce the official TF reduction (2x the mean over 2N anchors).
    """

    def __init__(
        self,
        temperature: float = 0.1,
        sum_directions: bool = False,
        reduction: str = "mean",
        normalize: bool = True,
        chunk_size: Optional[int] = None,
        backend: str = "auto",
    ):
        super().__init__(
            nt_xent,
            temperature=temperature,
            sum_directions=sum_directions,
            reduction=reduction,
            normalize=normalize,
            chunk_size=chunk_size,
            backend=backend,
        )
