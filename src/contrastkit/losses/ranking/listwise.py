"""In-batch listwise objectives with graded relevance: ListNet (top-one probabilities, Cao et al.
2007) and the Plackett-Luce likelihood of the graded order (ListMLE, Xia et al. 2008). Dense
``(N, M)`` scores; rank-local under a process group (the relevance grades index this rank's
candidate columns)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..._validation import check_compatible, check_embeddings, check_temperature, check_tensor
from ...objective import Objective, kappa, prepare, rank_local_objective, reduce

__all__ = ["list_net", "ListNet", "plackett_luce", "PlackettLuce"]

TARGETS = ("softmax", "exp2", "linear")


def _scores(query, candidates, relevance, temperature, normalize) -> tuple[Tensor, Tensor]:
    check_embeddings("query", query)
    check_embeddings("candidates", candidates)
    check_compatible("query", query, "candidates", candidates)
    check_tensor(
        "relevance",
        relevance,
        kind="real",
        shape=(query.shape[0], candidates.shape[0]),
        ref=query,
    )
    if bool((relevance < 0).any()):
        raise ValueError("relevance must hold grades >= 0 (0: not relevant or not judged)")
    check_temperature("temperature", temperature)
    q, c = prepare(query, normalize), prepare(candidates, normalize)
    k = kappa(q, temperature, group=None)
    return (q @ c.T) * k, relevance.to(q.dtype)


@rank_local_objective
def list_net(
    query: Tensor,
    candidates: Tensor,
    relevance: Tensor,
    *,
    temperature=0.05,
    target: str = "softmax",
    target_temperature: float = 1.0,
    normalize: bool = True,
    reduction: str = "mean",
) -> Tensor:
    """ListNet of ``query`` against every row of ``candidates`` with graded ``relevance``; see
    :class:`ListNet`."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    check_temperature("target_temperature", target_temperature)
    u, g = _scores(query, candidates, relevance, temperature, normalize)
    if target == "softmax":
        phi = torch.softmax(g / float(target_temperature), dim=1)
    else:
        phi = torch.exp2(g) - 1 if target == "exp2" else g
        mass = phi.sum(1, keepdim=True)
        phi = phi / torch.where(mass > 0, mass, torch.ones_like(mass))
    judged = phi.sum(1) > 0  # rows with no relevant column carry no term
    rows = -(phi * torch.log_softmax(u, dim=1)).sum(1)
    rows = torch.where(judged, rows, torch.zeros_like(rows))
    return reduce(rows, reduction, int(judged.sum()), group=None)


@rank_local_objective
def plackett_luce(
    query: Tensor,
    candidates: Tensor,
    relevance: Tensor,
    *,
    temperature=0.05,
    normalize: bool = True,
    reduction: str = "mean",
) -> Tensor:
    """Plackett-Luce (ListMLE) negative log-likelihood of the graded order; see
    :class:`PlackettLuce`."""
    u, g = _scores(query, candidates, relevance, temperature, normalize)
    g, order = torch.sort(g, dim=1, descending=True, stable=True)  # ties: column order
    us = u.gather(1, order)
    suffix = torch.logcumsumexp(us.flip(1), dim=1).flip(1)  # LSE over positions >= r
    relevant = g > 0
    terms = torch.where(relevant, suffix - us, torch.zeros_like(us))
    return reduce(terms.sum(1), reduction, int(relevant.any(1).sum()), group=None)


class ListNet(Objective, functional=list_net):
    """ListNet with graded relevance: the cross-entropy between a target distribution over each
    query's candidates, built from graded relevance, and the softmax of its scores.

    Every query is scored against every candidate row of the batch (in-batch candidates);
    ``relevance[i, j] >= 0`` grades candidate ``j`` for query ``i`` (0: not relevant or not
    judged). ``target`` chooses how grades become the target distribution: ``"softmax"``
    (ListNet's top-one probabilities ``exp(g / target_temperature)``, unjudged columns keep
    weight ``exp(0)``), ``"exp2"`` (``2^g - 1``, the DCG gain) or ``"linear"`` (``g``). With the
    last two a query without any relevant column carries no term and is left out of the mean;
    with one relevant column per query they are InfoNCE. Dense ``(N, M)`` scores. Computed on
    one rank's batch only: under a process group it raises unless called inside
    ``contrastkit.distributed.local()``. Formula::

        u_ij = cos(q_i, c_j) / temperature          (dot product with normalize=False)
        p_ij = phi(g_ij) / sum_k phi(g_ik)
        l_i  = -sum_j p_ij log softmax_j(u_ij)
        loss = mean over queries with a target of l_i

    Args:
        temperature (float | Tensor, default 0.05): divides the scores.
        target (str, default "softmax"): ``"softmax"`` | ``"exp2"`` | ``"linear"`` (see above).
        target_temperature (float, default 1.0): divides the grades in the ``"softmax"`` target.
        normalize (bool, default True): L2-normalise query and candidates (cosine scores).
        reduction (str, default "mean"): ``"mean"`` | ``"sum"`` | ``"none"`` (``(N,)``, 0 for a
            query without target).

    Inputs:
        - ``query``: (N, d) float.
        - ``candidates``: (M, d) float, the candidates of every query.
        - ``relevance``: (N, M) real grades >= 0.
        - returns a scalar, or (N,) with ``reduction="none"``.

    Example::

        import torch
        from contrastkit.losses.ranking import ListNet

        q, c = torch.randn(4, 16), torch.randn(6, 16)
        relevance = torch.zeros(4, 6)
        relevance[0, :3] = torch.tensor([3.0, 1.0, 2.0])
        relevance[1:, 3:] = torch.eye(3)
        loss = ListNet(target="exp2")(q, c, relevance)

    See also:
        :class:`PlackettLuce` (likelihood of the whole graded order), :class:`InfoNCE`.

    References:
        Cao et al., "Learning to Rank: From Pairwise Approach to Listwise Approach", ICML 2007,
        DOI:10.1145/1273496.1273513.
    """


class PlackettLuce(Objective, functional=plackett_luce):
    """Plackett-Luce (ListMLE) with graded relevance: the negative log-likelihood that each query
    picks its relevant candidates in graded order, each pick a softmax over what is left,
    the irrelevant candidates always left.

    Row ``i``'s relevant columns (``relevance > 0``) are sorted by grade, highest first (equal
    grades in column order), ``pi_1, ..., pi_R``; every other column of the batch (``U_i``)
    stays a competitor at every step, so the loss asks for "relevant above all irrelevant, in
    graded order". A query without a relevant column carries no term and is left out of the
    mean. With all ``M`` columns relevant and distinct grades this is ListMLE; with ``M = 2``
    it is ``log(1 + exp(u_2 - u_1))``. The loss is >= 0. Dense ``(N, M)`` scores. Computed on
    one rank's batch only: under a process group it raises unless called inside
    ``contrastkit.distributed.local()``. Formula::

        u_ij = cos(q_i, c_j) / temperature          (dot product with normalize=False)
        l_i  = -sum_{r=1..R} [ u_{i,pi_r} - log( sum_{m >= r} exp(u_{i,pi_m})
                                                 + sum_{j in U_i} exp(u_ij) ) ]
        loss = mean over queries with a relevant column of l_i

    Args:
        temperature (float | Tensor, default 0.05): divides the scores.
        normalize (bool, default True): L2-normalise query and candidates (cosine scores).
        reduction (str, default "mean"): ``"mean"`` | ``"sum"`` | ``"none"`` (``(N,)``, 0 for a
            query without a relevant column).

    Inputs:
        - ``query``: (N, d) float.
        - ``candidates``: (M, d) float, the candidates of every query.
        - ``relevance``: (N, M) real grades >= 0 (0: not relevant).
        - returns a scalar, or (N,) with ``reduction="none"``.

    Example::

        import torch
        from contrastkit.losses.ranking import PlackettLuce

        q, c = torch.randn(4, 16), torch.randn(6, 16)
        relevance = torch.zeros(4, 6)
        relevance[0, :3] = torch.tensor([3.0, 1.0, 2.0])
        relevance[1:, 3:] = torch.eye(3)
        loss = PlackettLuce(temperature=0.1)(q, c, relevance)

    See also:
        :class:`ListNet` (top-one probabilities), :class:`CoSENT` (pairs of pairs).

    References:
        Xia et al., "Listwise Approach to Learning to Rank: Theory and Algorithm", ICML 2008,
        DOI:10.1145/1390156.1390306. Plackett, "The Analysis of Permutations", Applied
        Statistics 1975, DOI:10.2307/2346567.
    """
