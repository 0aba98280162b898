"""The contrastive pair loss of Hadsell, Chopra and LeCun (CVPR 2006): O(N d) elementwise terms,
one per given pair (exact under a process group: a per-pair mean)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._validation import check_compatible, check_embeddings, check_reduction
from ...objective import Objective, exact_objective, objective_group, prepare, reduce
from ._common import _number

__all__ = ["pair_margin_contrastive", "PairMarginContrastive"]


@exact_objective
def pair_margin_contrastive(
    x1: Tensor,
    x2: Tensor,
    dissimilar: Tensor,
    *,
    margin: float = 1.0,
    normalize: bool = False,
    reduction: str = "mean",
) -> Tensor:
    """Contrastive pair loss of pairs ``(x1_i, x2_i)`` labelled ``dissimilar``; see
    :class:`PairMarginContrastive`."""
    group = objective_group()
    check_reduction(reduction)
    margin = _number("margin", margin)
    check_embeddings("x1", x1)
    check_embeddings("x2", x2)
    check_compatible("x1", x1, "x2", x2, same_rows=True)
    if not isinstance(dissimilar, Tensor) or dissimilar.shape != (x1.shape[0],):
        raise ValueError(f"dissimilar must be a tensor of shape ({x1.shape[0]},)")
    if dissimilar.is_complex():
        raise ValueError(f"dissimilar must hold 0 or 1 values, got dtype {dissimilar.dtype}")
    y = dissimilar.to(x1.dtype)
    if not bool(((y == 0) | (y == 1)).all()):
        raise ValueError("dissimilar must hold 0 (similar) or 1 (dissimilar) values")
    a, b = prepare(x1, normalize), prepare(x2, normalize)
    d2 = (a - b).pow(2).sum(-1)
    pos = d2 > 0
    d = torch.where(pos, torch.where(pos, d2, torch.ones_like(d2)).sqrt(), 0 * d2)
    rows = 0.5 * (1 - y) * d2 + 0.5 * y * F.relu(margin - d).pow(2)
    return reduce(rows, reduction, group=group)


class PairMarginContrastive(Objective, functional=pair_margin_contrastive):
    """Contrastive pair loss (siamese networks): similar pairs are pulled together, dissimilar
    pairs pushed apart until their distance reaches ``margin``.

    Each input row pairs ``x1_i`` with ``x2_i`` and a label: 0 for a similar pair (pulled in
    with the squared distance), 1 for a dissimilar pair (pushed out to ``margin``, no loss
    beyond it). The gradient at ``D = 0`` is finite (0). With ``D_i = ||x1_i - x2_i||_2`` and
    ``Y_i`` = ``dissimilar[i]``::

        l_i  = (1 - Y_i) D_i^2 / 2 + Y_i max(0, margin - D_i)^2 / 2
        loss = mean_i l_i

    Exact under a ``torch.distributed`` process group (the mean over the global batch of
    pairs).

    Args:
        margin (float): the margin of dissimilar pairs, default 1.0. A Python number >= 0.
        normalize (bool): L2-normalise the embeddings first. Default ``False``.
        reduction (str): ``"mean"`` over pairs (default), ``"sum"`` or ``"none"`` (``(N,)``).

    Inputs:
        ==============  ==========  ==================================================
        input           shape       meaning
        ==============  ==========  ==================================================
        ``x1``          ``(N, d)``  float embeddings of the first element of each pair
        ``x2``          ``(N, d)``  float embeddings of the second element
        ``dissimilar``  ``(N,)``    0 (similar: a positive pair) or 1 (dissimilar),
                                    any real or integer dtype
        ==============  ==========  ==================================================

    Example::

        import torch
        import contrastkit as ck

        x1, x2 = torch.randn(8, 16), torch.randn(8, 16)
        dissimilar = torch.tensor([0, 1, 0, 1, 1, 0, 0, 1])
        loss = ck.PairMarginContrastive(margin=1.0)(x1, x2, dissimilar)

    See also:
        :class:`TripletMargin` (a relative margin on triplets),
        :class:`MaxMarginContrastive`.

    References:
        Hadsell, Chopra, LeCun, "Dimensionality Reduction by Learning an Invariant Mapping",
        CVPR 2006, DOI:10.1109/CVPR.2006.100.
    """
