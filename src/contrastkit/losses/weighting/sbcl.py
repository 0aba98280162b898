"""SBCL: subclass-balancing contrastive loss."""

from __future__ import annotations

from typing import Optional, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._validation import (
    check_embeddings,
    check_labels,
    check_positive,
    check_reduction,
    check_temperature,
)
from ...engine import LSETerm, PairMask, RowSpec
from ...objective import (
    Objective,
    engine_args,
    exact_objective,
    gather_rows,
    objective_group,
    partner_logits,
    replicated,
    row_weight,
    run,
    sum_across_ranks,
)
from ..infonce.supcon import supcon

__all__ = ["sbcl", "SBCL"]


@exact_objective
def sbcl(
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
    """SBCL loss of ``features`` (B, 2, d) with class ``labels`` and ``subclass_labels`` (B,)
    and per-class ``class_temperatures`` (C,); see :class:`SBCL`."""
    eng = engine_args(chunk_size, backend)
    group = objective_group()  # None without a process group
    check_reduction(reduction)
    check_temperature("temperature", temperature)
    check_positive("base_temperature", base_temperature)
    check_embeddings("features", features, ndim=3)
    B = features.shape[0]
    if features.shape[1] != 2:
        raise ValueError(f"features must have two views (B, 2, d), got {tuple(features.shape)}")
    check_labels("labels", labels, B, features)
    check_labels("subclass_labels", subclass_labels, B, features)
    # class and sub-class ids, counts and sums over every rank's samples
    labels_all = gather_rows(labels, "labels", group=group)
    subclass_all = gather_rows(subclass_labels, "subclass_labels", group=group)
    n_classes = int(labels_all.max()) + 1
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
    temps = replicated(class_temperatures.to(Z.dtype), group=group)  # shared: global gradient
    k = (1.0 / temps)[y]  # per-anchor kappa
    S = int(subclass_all.max()) + 1
    sub_sum = Z.new_zeros(S, Z.shape[1]).index_add(0, s, Z)
    cls_sum = Z.new_zeros(n_classes, Z.shape[1]).index_add(0, y, Z)
    sub_sum = sum_across_ranks(sub_sum, "sub-class sums", group=group)
    cls_sum = sum_across_ranks(cls_sum, "class sums", group=group)
    n_sub = (2 * torch.bincount(subclass_all, minlength=S))[s]  # two views per sample
    n_cls = (2 * torch.bincount(labels_all, minlength=n_classes))[y]
    u_partner = partner_logits(Z, k)
    pos_sum = k * (Z * (cls_sum[y] - sub_sum[s])).sum(-1) + u_partner
    n_pos = (n_cls - n_sub + 1).to(Z.dtype)
    w = row_weight(reduction, 2 * B, group=group) * gamma
    spec = RowSpec(
        terms=(LSETerm(exclude=PairMask(row_labels=s, col_labels=s, labels="same")),),
        row_fn=lambda st, sd: (
            w * (torch.logaddexp(cast(Tensor, st.lse)[0], sd["partner"]) - sd["pos"])
        ),
        row_side={"partner": u_partner, "pos": pos_sum / n_pos},
    )
    term2 = run(Z, Z, spec, k, reduction, eng, group=group)
    return term1 + term2


class SBCL(Objective, functional=sbcl):
    """SBCL: subclass-balancing contrastive learning for long-tailed data. Head classes are
    split into sub-classes about the size of the tail classes; the loss contrasts sub-classes
    (SupCon on sub-class labels) and adds a class-level ranking term with per-class
    temperatures, so that same-class samples of other sub-classes rank above other classes
    (Hou et al.).

    Both views stacked (2B anchors), ``s`` cosines, ``tau_c(i)`` the temperature of anchor
    ``i``'s class::

        loss    = (tau / tau_base) SupCon_sub(tau) + gamma L_class
        L_class = mean_i [ log(exp(s_ii' / tau_c(i)) + sum_{j other sub-class} exp(s_ij / tau_c(i)))
                           - mean_{p in P(i)} s_ip / tau_c(i) ]
        P(i)    = same class, other sub-class, plus i's other view i'

    ``gamma = 0`` is SupCon on sub-class labels. The sub-class labels and the class
    temperatures come from :class:`contrastkit.negatives.SubclassBalancer`::

        balancer.fit(features, labels)  # every few epochs
        loss = ck.sbcl(features, labels, balancer.subclass_labels[idx],
                       balancer.class_temperatures, temperature=balancer.temperature)

    Exact under a process group: class and sub-class ids, counts and sums are those of every
    rank's samples (labels gathered, sums all-reduced with their gradients).

    Args:
        temperature (float, default 0.1): tau of the sub-class SupCon term.
        base_temperature (float, default 0.07): tau_base.
        gamma (float, default 0.25): weight of the class-level term.
        reduction (str, default "mean"): "mean" | "sum" | "none" (2B per-anchor terms).
        normalize (bool, default True): L2-normalise the features.
        chunk_size (int or None, default None), backend (str, default "auto"): engine options.

    Inputs:
        - ``features`` (B, 2, d) float: two views of every sample (SupCon's layout).
        - ``labels`` (B,) int64: classes.
        - ``subclass_labels`` (B,) int64: sub-classes (positives of the SupCon term share one).
        - ``class_temperatures`` (C,) float or None: per-class temperatures (None:
          ``temperature`` for every class).

    Example::

        import torch
        import contrastkit as ck

        features = torch.randn(8, 2, 16)
        labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
        subclass_labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
        loss = ck.SBCL(temperature=0.1)(features, labels, subclass_labels)

    See also:
        :class:`SupCon`, :class:`contrastkit.negatives.SubclassBalancer`.

    References:
        Hou, Zhang, Wang, Zhou, "Subclass-balancing Contrastive Learning for Long-tailed
        Recognition", ICCV 2023, arXiv:2306.15925 (github.com/JackHck/SBCL).
    """


#: the name published before the naming rule
sbcl_loss = sbcl
