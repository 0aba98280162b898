"""WhitenedCSE: shuffled group whitening and its multi-positive InfoNCE (Zhuo et al.,
"Whitening-based Contrastive Learning of Sentence Embeddings", ACL 2023, arXiv 2305.17746;
SupstarZh/WhitenedCSE ``shuffled_group_whitening.py``, ``models.py``).

:class:`ShuffledGroupWhitening` (training mode), for each of the ``num_views`` view blocks of a
view-major batch ``(V B, D)`` separately: draw a random channel permutation, split the channels
into ``G`` groups of ``D/G``, centre each group over the batch, ``Sigma_g = X_g^T X_g / B``,
ZCA ``W_g = U diag(S^{-1/2}) U^T`` (eigendecomposition), ``X_g <- X_g W_g``, undo the
permutation. Eval mode whitens the whole input with one permutation. As in the official code
(which rebuilds the covariance as a new leaf tensor) ``W`` is detached by default: gradients
flow through the centring and the product only (``detach_whitening=False`` keeps them). The
official code has no epsilon (``eps=0``) and uses ``torch.symeig``; this uses
``torch.linalg.eigh``. A group needs more than ``D/G`` samples, else its covariance is singular:
that raises unless ``eps > 0``.

:func:`whitened_cse` is the objective: ``L = CE(S12) + CE(S13)`` with ``S1v = cos(z1, zv)/tau``
and the diagonal as targets (z1 anchors; z3 is a second positive, not a hard negative), each a
mean over rows. It is two InfoNCE passes on the engine (:func:`..info_nce.info_nce`). tau 0.05.
The module is meant to sit before any loss (after the pooled encoder output, before the MLP).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from .._validation import check_embeddings, check_index
from ..engine import compute_dtype
from ._common import FunctionalLoss
from .info_nce import info_nce

__all__ = ["group_whiten", "ShuffledGroupWhitening", "whitened_cse", "WhitenedCSELoss"]


def group_whiten(
    x: Tensor,
    num_groups: int,
    perm: Optional[Tensor] = None,
    *,
    eps: float = 0.0,
    detach_whitening: bool = True,
) -> Tensor:
    """ZCA-whiten ``x (B, D)`` in ``num_groups`` channel groups (after the channel permutation
    ``perm``, undone on output): every group of the result has identity covariance.

    A group needs more than ``D / num_groups`` rows, else its covariance is singular and the
    whitening NaN: that raises unless ``eps > 0`` (as :class:`ShuffledGroupWhitening`)."""
    check_embeddings("x", x)
    B, D = x.shape
    G = num_groups
    if isinstance(G, bool) or not isinstance(G, int) or G < 1 or D % G:
        raise ValueError(f"num_groups must be a positive integer dividing D={D}, got {G!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"eps must be a number >= 0, got {eps!r}")
    if eps == 0 and B <= D // G:
        raise ValueError(
            f"x needs more than D/num_groups = {D // G} rows per group, got shape {tuple(x.shape)}"
            " (singular covariance); use a larger batch, more groups, or eps > 0"
        )
    if perm is not None:
        check_index("perm", perm, D, shape=(D,), ref=x, what="channels")
        if not bool((torch.bincount(perm, minlength=D) == 1).all()):
            raise ValueError(f"perm must be a permutation of the {D} channels")
    x = x.to(compute_dtype(x.dtype))  # eigh needs fp32/fp64
    if perm is not None:
        x = x[:, perm]
    xg = x.reshape(B, G, D // G)
    xg = (xg - xg.mean(dim=0, keepdim=True)).transpose(0, 1)  # (G, B, D/G)
    cov = xg.transpose(1, 2) @ xg / B
    if detach_whitening:
        cov = cov.detach()
    if eps:
        cov = cov + eps * torch.eye(D // G, dtype=cov.dtype, device=cov.device)
    S, U = torch.linalg.eigh(cov)
    W = U @ torch.diag_embed(S.rsqrt()) @ U.transpose(1, 2)
    out = (xg @ W).transpose(0, 1).reshape(B, D)
    if perm is not None:
        out = out[:, torch.argsort(perm)]
    return out


class ShuffledGroupWhitening(torch.nn.Module):
    """Shuffled group whitening of view-major features ``(num_views * B, D)``.

    Args:
        num_features: D; num_groups: G (128 for D = 768; None: ``ceil(2 D / rows)`` as the
            official automatic choice, computed per call).
        num_views: views per sentence (3 dropout passes in WhitenedCSE).
        shuffle: random channel permutation per view and call (from ``generator`` if given).
        eps: ridge added to each group covariance (0 as the official code).
        detach_whitening: treat ``W`` as a constant in backward (official behaviour).
    """

    def __init__(
        self,
        num_features: int,
        num_groups: Optional[int] = 128,
        num_views: int = 3,
        shuffle: bool = True,
        eps: float = 0.0,
        detach_whitening: bool = True,
        generator: Optional[torch.Generator] = None,
    ):
        super().__init__()
        if not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features must be a positive integer, got {num_features!r}")
        if num_groups is not None and (
            not isinstance(num_groups, int) or num_groups < 1 or num_features % num_groups
        ):
            raise ValueError(
                f"num_groups must divide num_features ({num_features}), got {num_groups!r}"
            )
        if not isinstance(num_views, int) or num_views < 1:
            raise ValueError(f"num_views must be a positive integer, got {num_views!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0:
            raise ValueError(f"eps must be a number >= 0, got {eps!r}")
        self.num_features, self.num_groups, self.num_views = num_features, num_groups, num_views
        self.shuffle = shuffle and num_groups != 1
        self.eps, self.detach_whitening, self.generator = float(eps), detach_whitening, generator

    def _groups(self, rows: int) -> int:
        if self.num_groups is not None:
            return self.num_groups
        G = math.ceil(2 * self.num_features / rows)
        while self.num_features % G:
            G += 1
        return G

    def _perm(self, device) -> Optional[Tensor]:
        if not self.shuffle:
            return None
        return torch.randperm(self.num_features, generator=self.generator).to(device)

    def _whiten(self, x: Tensor, G: int) -> Tensor:
        n = x.shape[0]
        if self.eps == 0 and n <= self.num_features // G:
            raise ValueError(
                f"each whitened block needs more than D/G = {self.num_features // G} rows, got "
                f"{n} (singular covariance); use a larger batch, more groups, or eps > 0"
            )
        return group_whiten(
            x, G, self._perm(x.device), eps=self.eps, detach_whitening=self.detach_whitening
        )

    def forward(self, x: Tensor) -> Tensor:
        check_embeddings("x", x)
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"x must have {self.num_features} features, got shape {tuple(x.shape)}"
            )
        if not self.training:
            return self._whiten(x, self._groups(x.shape[0]))
        if x.shape[0] % self.num_views:
            raise ValueError(
                f"x rows ({x.shape[0]}) must be num_views ({self.num_views}) times the batch"
            )
        B = x.shape[0] // self.num_views
        G = self._groups(x.shape[0])
        return torch.cat([self._whiten(v, G) for v in x.split(B)])

    def extra_repr(self) -> str:
        return (
            f"num_features={self.num_features}, num_groups={self.num_groups}, "
            f"num_views={self.num_views}, shuffle={self.shuffle}, eps={self.eps}"
        )


def whitened_cse(
    z1: Tensor,
    z2: Tensor,
    *positives: Tensor,
    temperature=0.05,
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """WhitenedCSE objective ``sum_v CE(cos(z1, z_v) / tau, diag)`` over positive views
    ``z2, *positives`` (each ``(B, d)``; WhitenedCSE uses z2 and z3), each a row mean."""
    check_embeddings("z1", z1)
    total = None
    for name, zv in zip(
        ["z2"] + [f"positives[{i}]" for i in range(len(positives))], (z2, *positives)
    ):
        check_embeddings(name, zv)
        if zv.shape != z1.shape:
            raise ValueError(
                f"{name} must have the shape of z1 {tuple(z1.shape)}, got "
                f"{tuple(getattr(zv, 'shape', ()))}"
            )
        term = info_nce(
            z1,
            zv,
            temperature=temperature,
            normalize=normalize,
            chunk_size=chunk_size,
            backend=backend,
        )
        total = term if total is None else total + term
    return total


class WhitenedCSELoss(FunctionalLoss):
    """WhitenedCSE objective module: ``forward(z1, z2, z3, ...)``; tau 0.05 as the paper."""

    def __init__(
        self,
        temperature: float = 0.05,
        normalize: bool = True,
        chunk_size: Optional[int] = None,
        backend: str = "auto",
    ):
        super().__init__(
            whitened_cse,
            temperature=temperature,
            normalize=normalize,
            chunk_size=chunk_size,
            backend=backend,
        )
