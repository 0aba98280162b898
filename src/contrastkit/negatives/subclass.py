"""SBCL: sub-class-balancing contrastive learning (Hou et al., "Subclass-balancing Contrastive
Learning for Long-tailed Recognition", ICCV 2023; official code JackHck/SBCL).

Head classes are split into sub-classes of about the tail-class size by k-means in feature space;
the loss contrasts at the sub-class level (SupCon on sub-class labels) plus a class-level ranking
term with per-class temperatures::

    M_c   = max(1, n_c // max(min_c n_c, L))                      (L = 10)
    tau_c = tau * rho_c / mean(rho),  rho_c = mean_i ||f_i - mu_c|| / log(n_c + 10),
            clipped to its 10th-90th percentile (the official code);
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

from .._extras import require
from .._validation import (
    check_embeddings,
    check_labels,
    check_temperature,
)

__all__ = ["SubclassBalancer"]


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
    The loss is :func:`contrastkit.sbcl` (module :class:`contrastkit.SBCL`), given the fitted
    state: ``sbcl(features, labels, subclass_labels, balancer.class_temperatures,
    temperature=balancer.temperature)``.
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
        KMeans = require("sklearn.cluster", "metrics", "SubclassBalancer.fit").KMeans

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
