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

:func:`whitened_cse` is the objective: ``L = CE(S12) + CE(S13)`` with ``S1v = cos(z1, zv)/T``
and the diagonal as targets (z1 anchors; z3 is a second positive, not a hard negative), each a
mean over rows. It is two InfoNCE passes on the engine
(:func:`contrastkit.losses.infonce.info_nce.info_nce`). T 0.05. The whitening module is meant to
sit before any loss (after the pooled encoder output, before the MLP).

Exactness: the whitening (:func:`shuffled_group_whitening`, alias ``group_whiten``) is
rank-local: its covariance is over this rank's rows, so under a process group it raises unless
called inside ``contrastkit.distributed.local()`` (each rank then whitens its own batch, as the
official single-process code). :func:`whitened_cse` is exact: it is a sum of exact InfoNCE
passes, so under a group it is the loss of the global batch.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from ..._validation import check_embeddings, check_index
from ...engine import compute_dtype
from ...objective import Objective, exact_objective, rank_local_objective
from ..infonce.info_nce import info_nce

__all__ = [
    "shuffled_group_whitening",
    "group_whiten",
    "ShuffledGroupWhitening",
    "whitened_cse",
    "WhitenedCSE",
    "WhitenedCSELoss",
]


@rank_local_objective
def shuffled_group_whitening(
    x: Tensor,
    num_groups: int,
    perm: Optional[Tensor] = None,
    *,
    eps: float = 0.0,
    detach_whitening: bool = True,
) -> Tensor:
    """ZCA-whiten ``x`` in ``num_groups`` channel groups after the channel permutation ``perm``
    (undone on output); see :class:`ShuffledGroupWhitening`."""
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


#: the name published before the naming rule
group_whiten = shuffled_group_whitening


class ShuffledGroupWhitening(torch.nn.Module):
    """Shuffled group whitening: the representation-shaping transform of WhitenedCSE.

    A transform, not a loss: it sits after the pooled encoder output and before the loss
    (:class:`WhitenedCSE`). In training mode each of the ``num_views`` view blocks of a
    view-major batch is whitened separately: a random channel permutation, ``G`` groups of
    ``D/G`` channels, each group centred over the batch and ZCA-whitened (identity covariance),
    the permutation undone. The random shuffles make the views of a sentence differ (an
    augmentation) while the whitening spreads the embeddings uniformly. Eval mode whitens the
    whole input with one permutation. As in the official code the whitening matrix is detached
    by default. Rank-local under a process group (the covariance is over this rank's rows).

    ::

        X_g <- X_g - mean_batch(X_g)                 (group g of the permuted channels)
        Sigma_g = X_g^T X_g / B + eps I = U diag(S) U^T
        W_g = U diag(S^{-1/2}) U^T,   X_g <- X_g W_g   (then the permutation is undone)

    Args:
        num_features (int): ``D``.
        num_groups (int or None, default 128): ``G`` (128 for D = 768); None: ``ceil(2 D /
            rows)`` (the official automatic choice, computed per call).
        num_views (int, default 3): views per sentence (3 dropout passes in WhitenedCSE).
        shuffle (bool, default True): a random channel permutation per view and call.
        eps (float, default 0.0): ridge added to each group covariance (0 as the official
            code; a group then needs more than ``D/G`` rows).
        detach_whitening (bool, default True): treat ``W`` as a constant in backward.
        generator (torch.Generator or None, default None): generator of the permutations.

    Inputs:
        - ``x``: ``(num_views * B, D)`` float, view-major (training mode); ``(N, D)`` in eval
          mode. Returns the whitened features, same shape (float32 for half inputs).

    Example::

        import torch
        import contrastkit as ck

        whiten = ck.ShuffledGroupWhitening(16, num_groups=4, num_views=3)
        h = torch.randn(3 * 32, 16)                  # 3 dropout views of 32 sentences
        z1, z2, z3 = whiten(h).split(32)
        loss = ck.WhitenedCSE(temperature=0.05)(z1, z2, z3)

    See also:
        :func:`shuffled_group_whitening` (functional, alias ``group_whiten``),
        :class:`WhitenedCSE`.

    References:
        Zhuo et al., "Whitening-based Contrastive Learning of Sentence Embeddings", ACL 2023,
        arXiv:2305.17746 (SupstarZh/WhitenedCSE).
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
        return shuffled_group_whitening(
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


@exact_objective
def whitened_cse(
    z1: Tensor,
    z2: Tensor,
    *positives: Tensor,
    temperature=0.05,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """WhitenedCSE objective of anchors ``z1`` and positive views ``z2, *positives``; see
    :class:`WhitenedCSE`."""
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
    # no batch-level quantity of its own: each InfoNCE pass is exact (it takes the group of
    # this call and computes over the global batch)
    for zv in (z2, *positives):
        term = info_nce(
            z1,
            zv,
            temperature=temperature,
            reduction=reduction,
            normalize=normalize,
            chunk_size=chunk_size,
            backend=backend,
        )
        total = term if total is None else total + term
    assert total is not None  # z2 is always a view
    return total


class WhitenedCSE(Objective, functional=whitened_cse):
    """WhitenedCSE: multi-positive InfoNCE over whitened sentence embeddings.

    The sentence embeddings of ``V`` dropout passes go through :class:`ShuffledGroupWhitening`
    (different random channel shuffles per view); the first view is the anchor and every other
    view is a positive, each contrasted with the other sentences of the batch (in-batch
    negatives) in its own InfoNCE term; the terms are added (z3 is a second positive, not a hard
    negative). Exact under a process group (the InfoNCE passes are).

    ::

        S_1v = cos(z1, z_v) / T                       (B x B, for each positive view v)
        l_i = sum_{v >= 2} [ -S_1v[i, i] + log sum_j exp(S_1v[i, j]) ]
        loss = mean_i l_i   (= CE(S_12) + CE(S_13) with two positive views)

    Args:
        temperature (float or tensor, default 0.05): ``T``.
        reduction (str, default "mean"): ``"mean"`` | ``"sum"`` | ``"none"`` (per anchor, summed
            over the positive views).
        normalize (bool, default True): L2-normalise (cosine similarities).
        chunk_size (int or None, default None), backend (str, default "auto"): engine options.

    Inputs:
        - ``z1``: ``(B, d)`` float anchors (first view).
        - ``z2, *positives``: ``(B, d)`` float each, the other views; row ``i`` of each is a
          positive of ``z1[i]``, the other rows are negatives.

    Example::

        import torch
        import contrastkit as ck

        z1, z2, z3 = torch.randn(3, 16, 8).unbind(0)
        loss = ck.WhitenedCSE(temperature=0.05)(z1, z2, z3)

    See also:
        :class:`ShuffledGroupWhitening` (the whitening transform), :class:`InfoNCE`.

    References:
        Zhuo et al., "Whitening-based Contrastive Learning of Sentence Embeddings", ACL 2023,
        arXiv:2305.17746 (SupstarZh/WhitenedCSE).
    """


#: the name published before the naming rule
WhitenedCSELoss = WhitenedCSE
