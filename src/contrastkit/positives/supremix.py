"""SupReMix mixture pairs for contrastive regression (Wu et al., "Mixup Your Own Pairs" /
"SupReMix: Supervised Contrastive Learning for Medical Imaging Regression with Mixup", 2023;
official code yilei-wu/SupReMix).

Over the ``R = 2B`` view rows ``f`` (view-major) with regression labels ``t``:

* anchor-inclusive mixtures (hard **negatives** of anchor ``i``), for every ``k != i`` with
  ``t_k != t_i``: ``m = a f_i + (1 - a) f_k``, label ``a t_i + (1 - a) t_k``,
  ``a ~ Beta(2, 8)`` independently per (i, k);
* anchor-exclusive mixtures (hard **positives** of anchor ``i``), for every ``(j, k)`` with
  ``t_j < t_i < t_k``, ``t_i - t_j < window``, ``t_k - t_i < window``:
  ``a = (t_k - t_i) / max(t_k - t_j, 1e-9)`` so ``a t_j + (1 - a) t_k = t_i``.

Mixtures are detached and not re-normalised; they are stored sparsely (one row per mixture with its
anchor index), never as the reference's dense ``R^3 x d`` tensor. Denominator weights
(``L1_inv`` default): ``|t_i - t~| + 1``; ``L1``: ``1 / (|D| + 1)``; ``L2``: ``1 / (D^2 + 1)``;
``L2_inv``: ``D^2 + 1``. The argparse help of the code says ``--beta 0`` is Beta(5, 5) but the
code maps it to Beta(2, 8); we use the code's value.

The split between the two SupReMix files: this module *builds the inputs* (the mixture pairs,
their labels and the distance weights :func:`supremix_weight`, also used per tile by the loss)
and never imports :mod:`contrastkit.losses`; the loss is
:class:`contrastkit.losses.structured.supremix.SupReMix`, which consumes
:meth:`SupReMixBatch.padded` (``mixtures, mixture_mask, mixture_labels``) as its optional
inputs::

    batch = SupReMixPairs(window=2.0)(features, labels)
    loss = SupReMix(temperature=0.3)(features, labels, *batch.padded())
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .._validation import check_embeddings, check_tensor
from ._random import beta

__all__ = ["DISTANCES", "SupReMixPairs", "SupReMixBatch", "distance_weight", "supremix_weight"]

#: the distance-magnifying weights of SupReMix's denominator terms
DISTANCES = ("L1_inv", "L2_inv", "L1", "L2")


def distance_weight(delta: Tensor, kind: str = "L1_inv") -> Tensor:
    """The weight of :func:`supremix_weight` without input checks (``kind`` must be one of
    :data:`DISTANCES`): the loss evaluates it on every tile of label differences."""
    d = delta.abs()
    if kind == "L1_inv":
        return d + 1
    if kind == "L1":
        return 1 / (d + 1)
    if kind == "L2":
        return 1 / (d * d + 1)
    return d * d + 1


def supremix_weight(delta: Tensor, kind: str = "L1_inv") -> Tensor:
    """Distance-magnifying weight of a denominator term with label distance ``delta``:
    ``L1_inv`` ``|delta| + 1`` (default), ``L2_inv`` ``delta^2 + 1``, ``L1`` ``1 / (|delta| + 1)``,
    ``L2`` ``1 / (delta^2 + 1)`` (the ``distance`` option of
    :class:`contrastkit.losses.structured.supremix.SupReMix`)."""
    check_tensor("delta", delta, kind="real", min_rows=0)
    if kind not in DISTANCES:
        raise ValueError(f"kind must be one of 'L1_inv', 'L1', 'L2', 'L2_inv', got {kind!r}")
    return distance_weight(delta, kind)


@dataclass
class SupReMixBatch:
    """Flattened rows and their mixtures. ``neg_*``: anchor-inclusive (negatives), ``pos_*``:
    anchor-exclusive (positives); ``*_anchor`` is the anchor row, ``*_first``/``*_second`` the
    mixed rows, ``*_alpha`` the coefficient of ``*_first``."""

    features: Tensor
    labels: Tensor
    neg_anchor: Tensor
    neg_first: Tensor
    neg_second: Tensor
    neg_alpha: Tensor
    neg_mix: Tensor
    neg_label: Tensor
    pos_anchor: Tensor
    pos_first: Tensor
    pos_second: Tensor
    pos_alpha: Tensor
    pos_mix: Tensor
    pos_label: Tensor

    def neg_weights(self, kind: str = "L1_inv") -> Tensor:
        return supremix_weight(self.labels[self.neg_anchor] - self.neg_label, kind)

    def padded(self) -> tuple[Tensor, Tensor, Tensor]:
        """Per-anchor padded ``(mixtures (R, Mx, d), mask (R, Mx), labels (R, Mx))``; mask 1 =
        positive (anchor-exclusive), 0 = negative (anchor-inclusive), -1 = padding: the
        ``mixtures``, ``mixture_mask``, ``mixture_labels`` inputs of the loss
        :class:`contrastkit.losses.structured.supremix.SupReMix`."""
        R, d = self.features.shape
        anchor = torch.cat([self.neg_anchor, self.pos_anchor])
        mix = torch.cat([self.neg_mix, self.pos_mix])
        lab = torch.cat([self.neg_label, self.pos_label])
        kind = torch.cat([torch.zeros_like(self.neg_anchor), torch.ones_like(self.pos_anchor)])
        order = torch.argsort(anchor, stable=True)
        anchor, mix, lab, kind = anchor[order], mix[order], lab[order], kind[order]
        counts = torch.bincount(anchor, minlength=R)
        Mx = max(int(counts.max()) if counts.numel() else 0, 1)
        start = torch.cumsum(counts, 0) - counts
        slot = torch.arange(anchor.numel(), device=anchor.device) - start[anchor]
        out = self.features.new_zeros(R, Mx, d)
        mask = torch.full((R, Mx), -1, dtype=torch.long, device=anchor.device)
        labels = self.labels.new_zeros(R, Mx)
        out[anchor, slot] = mix
        mask[anchor, slot] = kind
        labels[anchor, slot] = lab
        return out, mask, labels


class SupReMixPairs:
    """``__call__(features (B, 2, d) or (R, d), labels (B,) or (R,), generator=None)`` ->
    :class:`SupReMixBatch`. Args: ``window`` n (5 label units), ``beta`` (2, 8).

    Builds the inputs of the loss :class:`contrastkit.losses.structured.supremix.SupReMix`
    (pass ``*batch.padded()`` after its features and labels)."""

    def __init__(self, window: float = 5.0, beta_params=(2.0, 8.0)):
        if not isinstance(window, (int, float)) or window <= 0:
            raise ValueError(f"window must be a number > 0, got {window!r}")
        self.window, self.beta_params = float(window), tuple(beta_params)

    def __call__(
        self, features: Tensor, labels: Tensor, generator: Optional[torch.Generator] = None
    ) -> SupReMixBatch:
        check_embeddings("features", features, ndim=(2, 3))
        check_tensor("labels", labels, ndim=1, kind="real", ref=features)
        if features.dim() == 3:
            V = features.shape[1]
            f = torch.cat(features.unbind(1))
            t = labels.repeat(V) if labels.shape[0] == features.shape[0] else labels
        else:
            f, t = features, labels
        if not isinstance(t, Tensor) or t.dim() != 1 or t.shape[0] != f.shape[0]:
            raise ValueError(
                f"labels must have one value per sample: features {tuple(features.shape)}, "
                f"labels {tuple(labels.shape)}"
            )
        f, t = f.detach(), t.to(f.dtype)
        R = f.shape[0]
        # anchor-inclusive: every (i, k), k != i, t_k != t_i
        ni, nk = (t[:, None] != t[None, :]).nonzero(as_tuple=True)
        a = beta(*self.beta_params, (ni.numel(),), generator, f)
        neg_mix = a[:, None] * f[ni] + (1 - a[:, None]) * f[nk]
        neg_label = a * t[ni] + (1 - a) * t[nk]
        # anchor-exclusive: t_j < t_i < t_k inside the window
        pa, pj, pk = [], [], []
        for i in range(R):
            below = ((t < t[i]) & (t[i] - t < self.window)).nonzero().squeeze(1)
            above = ((t > t[i]) & (t - t[i] < self.window)).nonzero().squeeze(1)
            if below.numel() and above.numel():
                jj, kk = torch.meshgrid(below, above, indexing="ij")
                pa.append(torch.full((jj.numel(),), i, dtype=torch.long, device=f.device))
                pj.append(jj.reshape(-1))
                pk.append(kk.reshape(-1))
        empty = torch.empty(0, dtype=torch.long, device=f.device)
        pa = torch.cat(pa) if pa else empty
        pj = torch.cat(pj) if pj else empty
        pk = torch.cat(pk) if pk else empty
        alpha = ((t[pk] - t[pa]) / (t[pk] - t[pj]).clamp(min=1e-9)).clamp(0, 1)
        pos_mix = alpha[:, None] * f[pj] + (1 - alpha[:, None]) * f[pk]
        return SupReMixBatch(
            features=f,
            labels=t,
            neg_anchor=ni,
            neg_first=ni,
            neg_second=nk,
            neg_alpha=a,
            neg_mix=neg_mix,
            neg_label=neg_label,
            pos_anchor=pa,
            pos_first=pj,
            pos_second=pk,
            pos_alpha=alpha,
            pos_mix=pos_mix,
            pos_label=t[pa],
        )
