"""SBCL: sub-class-balancing contrastive learning (Hou et al., "Subclass-balancing Contrastive
Learning for Long-tailed Recognition", ICCV 2023; official code JackHck/SBCL).

Head classes are split into sub-classes of about the tail-class size by k-means in feature space;
the loss contrasts at the sub-class level (SupCon on sub-class labels) plus a class-level ranking
term with per-class temperatures::

    M_c   = max(1, n_c // max(min_c n_c, L))                      (L = 10)
    tau_c = tau * rho_c / mean(rho),  rho_c = mean_i ||f_i - mu_c|| / log(n_c + 10),
            clipped to its 10th-90th percentile (the code; the card says 20th-80th);
            tau_c = tau for classes with one sub-class
    L     = (tau / tau_base) * SupCon_sub(tau) + gamma * L_class

``L_class`` for anchor ``i`` (both views stacked, ``i'`` its other view), logits ``s / tau_c(i)``:
positives = same class, other sub-class, plus ``i'``; denominator = every other-sub-class sample
plus ``i'`` (``SupConLoss_rank``). Both terms are row-wise and run on the engine: term 2's
denominator is ``logaddexp(lse over other sub-classes, u_ii')`` and its positive sum
``kappa_i <z_i, C_class - C_sub> + u_ii'`` uses class and sub-class sums (O(N d)).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import (
    check_embeddings,
    check_labels,
    check_positive,
    check_reduction,
    check_temperature,
)
from ..engine import LSETerm, PairMask, RowSpec
from ..losses._common import engine_args, partner_logits, row_weight, run
from ..losses.supcon import supcon

__all__ = ["SubclassBalancer", "sbcl_loss"]


class SubclassBalancer:
    """Sub-class labels and per-class temperatures for SBCL (dataset-level state).

    Args:
        min_size: ``L`` (official ``--cluster``, 10).
        temperature: ``tau`` (0.1); per-class temperatures are rescaled to mean ``tau``.
        percentiles: clipping range of the per-class spread (official 10, 90).
        max_iter, tol, seed: scikit-learn k-means on L2-normalised features (cosine k-means as in
            the official ``kmeans_pytorch(distance="cosine")``, tol 1e-3).

    ``fit(features, labels)`` -> sub-class labels (n,) (also stored as ``subclass_labels``;
    ``subclass_to_class`` (S,), ``class_temperatures`` (C,)). Re-fit every ``step`` (10) epochs.
    """

    def __init__(
        self,
        min_size: int = 10,
        temperature: float = 0.1,
        *,
        percentiles=(10.0, 90.0),
        max_iter: int = 35,
        tol: float = 1e-3,
        seed: int = 0,
    ):
        if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1:
            raise ValueError(f"min_size must be a positive integer, got {min_size!r}")
        check_temperature("temperature", temperature)
        self.min_size, self.temperature = min_size, float(temperature)
        self.percentiles = percentiles
        self.max_iter, self.tol, self.seed = max_iter, tol, seed
        self.subclass_labels: Optional[Tensor] = None
        self.subclass_to_class: Optional[Tensor] = None
        self.class_temperatures: Optional[Tensor] = None

    def n_subclasses(self, counts) -> list[int]:
        """``M_c = max(1, n_c // max(min_c n_c, L))`` for every class count ``n_c``."""
        counts = [int(c) for c in counts]
        if not counts or min(counts) < 1:
            raise ValueError(f"counts must be positive class sizes, got {counts}")
        base = max(min(counts), self.min_size)
        return [max(1, c // base) for c in counts]

    def fit(self, features: Tensor, labels: Tensor) -> Tensor:
        from sklearn.cluster import KMeans

        check_embeddings("features", features)
        check_labels("labels", labels, features.shape[0], features)
        if int(labels.min()) < 0:
            raise ValueError("labels must be non-negative class ids")
        n_classes = int(labels.max()) + 1
        counts = torch.bincount(labels, minlength=n_classes)
        present = counts > 0
        m = self.n_subclasses(counts[present].tolist())
        M = torch.zeros(n_classes, dtype=torch.long)
        M[present.cpu()] = torch.tensor(m)
        f = features.detach().double().cpu()
        y = labels.cpu()
        sub = torch.empty_like(y)
        rho = np.zeros(n_classes)
        offset = 0
        owner = []
        for c in range(n_classes):
            idx = (y == c).nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            fc = f[idx]
            rho[c] = float((fc - fc.mean(0)).norm(dim=1).mean()) / np.log(idx.numel() + 10)
            if M[c] > 1:
                x = F.normalize(fc, dim=-1).numpy()
                km = KMeans(
                    n_clusters=int(M[c]),
                    n_init=1,
                    max_iter=self.max_iter,
                    tol=self.tol,
                    random_state=self.seed + c,
                )
                sub[idx] = torch.as_tensor(km.fit_predict(x), dtype=torch.long) + offset
            else:
                sub[idx] = offset
            owner += [c] * int(M[c])
            offset += int(M[c])
        pres = present.cpu().numpy()
        lo, hi = np.percentile(rho[pres], self.percentiles)
        rho = rho.clip(lo, hi)
        tau = self.temperature * rho / rho[pres].mean()
        tau[(M.numpy() <= 1) | ~pres] = self.temperature
        self.subclass_labels = sub.to(labels.device)
        self.subclass_to_class = torch.tensor(owner, dtype=torch.long, device=labels.device)
        self.class_temperatures = torch.as_tensor(tau, dtype=features.dtype, device=labels.device)
        return self.subclass_labels

    def loss(self, features: Tensor, labels: Tensor, subclass_labels: Tensor, **kw) -> Tensor:
        """:func:`sbcl_loss` with this balancer's ``class_temperatures`` and ``temperature``."""
        if self.class_temperatures is None:
            raise ValueError("call fit(features, labels) before loss()")
        kw.setdefault("temperature", self.temperature)
        return sbcl_loss(features, labels, subclass_labels, self.class_temperatures, **kw)


def sbcl_loss(
    features: Tensor,
    labels: Tensor,
    subclass_labels: Tensor,
    class_temperatures: Optional[Tensor] = None,
    *,
    temperature: float = 0.1,
    base_temperature: float = 0.07,
    gamma: float = 0.25,
    reduction: str = "mean",
    normalize: bool = True,
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """SBCL ranking loss of ``features`` (B, 2, d) with class ``labels`` (B,) and
    ``subclass_labels`` (B,); ``class_temperatures`` (C,) (default: ``temperature`` for all).
    ``gamma = 0`` is SupCon on sub-class labels (times ``tau / tau_base``)."""
    eng = engine_args(chunk_size, backend)
    check_reduction(reduction)
    check_temperature("temperature", temperature)
    check_positive("base_temperature", base_temperature)
    check_embeddings("features", features, ndim=3)
    B = features.shape[0]
    if features.shape[1] != 2:
        raise ValueError(f"features must have two views (B, 2, d), got {tuple(features.shape)}")
    check_labels("labels", labels, B, features)
    check_labels("subclass_labels", subclass_labels, B, features)
    n_classes = int(labels.max()) + 1
    if class_temperatures is None:
        class_temperatures = features.new_full((n_classes,), float(temperature))
    if not isinstance(class_temperatures, Tensor) or class_temperatures.dim() != 1:
        raise ValueError("class_temperatures must be a (C,) tensor")
    if class_temperatures.shape[0] < n_classes:
        raise ValueError(
            f"class_temperatures has {class_temperatures.shape[0]} entries but labels reach "
            f"class {n_classes - 1}"
        )
    check_positive("class_temperatures", class_temperatures)
    term1 = supcon(
        features,
        subclass_labels,
        temperature=temperature,
        base_temperature=base_temperature,
        reduction=reduction,
        normalize=normalize,
        chunk_size=chunk_size,
        backend=backend,
    )
    if gamma == 0:
        return term1
    Z = torch.cat([features[:, 0], features[:, 1]])
    if normalize:
        Z = F.normalize(Z, dim=-1)
    y, s = labels.repeat(2), subclass_labels.repeat(2)
    k = (1.0 / class_temperatures.to(Z.dtype))[y]  # per-anchor kappa
    S = int(s.max()) + 1
    sub_sum = Z.new_zeros(S, Z.shape[1]).index_add(0, s, Z)
    cls_sum = Z.new_zeros(n_classes, Z.shape[1]).index_add(0, y, Z)
    n_sub = torch.bincount(s, minlength=S)[s]
    n_cls = torch.bincount(y, minlength=n_classes)[y]
    u_partner = partner_logits(Z, k)
    pos_sum = k * (Z * (cls_sum[y] - sub_sum[s])).sum(-1) + u_partner
    n_pos = (n_cls - n_sub + 1).to(Z.dtype)
    w = row_weight(reduction, 2 * B) * gamma
    spec = RowSpec(
        terms=(LSETerm(exclude=PairMask(row_labels=s, col_labels=s, labels="same")),),
        row_fn=lambda st, sd: w * (torch.logaddexp(st["lse"][0], sd["partner"]) - sd["pos"]),
        row_side={"partner": u_partner, "pos": pos_sum / n_pos},
    )
    term2 = run(Z, Z, spec, k, reduction, eng)
    return term1 + term2
