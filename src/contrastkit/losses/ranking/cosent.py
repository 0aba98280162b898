"""CoSENT (Su, 2022; sentence-transformers' ``CoSENTLoss``): one log-sum-exp over every ordered
pair of labelled sentence pairs, computed in O(N log N) by sorting the labels (no N x N
matrix). Exact under a process group: the O(N) pair scores and labels of every rank are
gathered and every rank computes the loss of the global batch."""

from __future__ import annotations

import torch
from torch import Tensor

from ..._validation import check_compatible, check_embeddings, check_temperature, check_tensor
from ...objective import (
    Objective,
    exact_objective,
    gather_rows,
    global_total,
    kappa,
    objective_group,
    prepare,
    row_dot,
)

__all__ = ["cosent", "CoSENT"]


def _check_labels(labels, n: int, ref: Tensor) -> Tensor:
    """Real (or bool) similarity labels, one per pair, finite."""
    if isinstance(labels, Tensor) and labels.dtype == torch.bool:
        labels = labels.to(torch.int64)
    check_tensor("labels", labels, ndim=1, kind="real", rows=n, ref=ref)
    return labels


def _scale(ref: Tensor, scale, temperature, *, group) -> Tensor:
    """The multiplier of the scores: ``scale`` (sentence-transformers, default 20) or
    ``1 / temperature`` (give one of the two)."""
    if scale is None and temperature is None:
        scale = 20.0
    for name, value in (("scale", scale), ("temperature", temperature)):
        if value is not None:
            check_temperature(name, value)
    return kappa(ref, temperature, scale, group=group)


def global_ranked_pairs_lse(scores: Tensor, labels: Tensor, k: Tensor, *, group) -> Tensor:
    """:func:`ranked_pairs_lse` of ``k * scores`` over the global batch: every rank's scores
    and labels are gathered (O(N), rank-major) and every rank computes the same loss. The
    gradient follows the group's convention: each rank's share ``L / world`` goes through
    :func:`~contrastkit.objective.global_total` (value: the global ``L``), and the gather
    sums the ranks' gradients back into each rank's own scores."""
    if group is None:
        return ranked_pairs_lse(scores * k, labels)
    s_all = gather_rows(scores, "scores", group=group)
    y_all = gather_rows(labels, "labels", group=group)
    loss = ranked_pairs_lse(s_all * k, y_all)
    return global_total(loss / group.world, group=group)


def ranked_pairs_lse(scores: Tensor, labels: Tensor) -> Tensor:
    """``log(1 + sum_{(a, b): labels_a > labels_b} exp(scores_b - scores_a))`` without the
    N x N matrix: sort by label, a prefix log-cumsum-exp of the scores ending before each tie
    group. Ties contribute nothing; one pair or all labels tied gives 0."""
    y, order = torch.sort(labels, stable=True)
    s = scores[order]
    below = torch.searchsorted(y, y, right=False)  # how many labels are strictly lower
    prefix = torch.logcumsumexp(s, dim=0)
    prefix = torch.cat([s.new_full((1,), float("-inf")), prefix])
    terms = prefix[below] - s  # LSE_{b: y_b < y_a} s_b - s_a (-inf when none is lower)
    return torch.logsumexp(torch.cat([s.new_zeros(1), terms]), dim=0)


@exact_objective
def cosent(
    x1: Tensor,
    x2: Tensor,
    labels: Tensor,
    *,
    scale=None,
    temperature=None,
) -> Tensor:
    """CoSENT loss of the pairs ``(x1_i, x2_i)`` with gold similarities ``labels``; see
    :class:`CoSENT`."""
    return ranked_pair_loss(x1, x2, labels, scale, temperature, _cosine)


def _cosine(x1: Tensor, x2: Tensor) -> Tensor:
    return row_dot(prepare(x1, True), prepare(x2, True))


def ranked_pair_loss(x1, x2, labels, scale, temperature, similarity) -> Tensor:
    """``log(1 + sum_{y_a > y_b} exp(k (s_b - s_a)))`` with ``s_i = similarity(x1_i, x2_i)``,
    over the pairs of every rank of the running objective's group: the computation CoSENT and
    AnglE share (inputs checked here, only the O(N) scores and labels are gathered)."""
    group = objective_group()
    check_embeddings("x1", x1)
    check_embeddings("x2", x2)
    check_compatible("x1", x1, "x2", x2, same_rows=True)
    labels = _check_labels(labels, x1.shape[0], x1)
    k = _scale(x1, scale, temperature, group=group)
    return global_ranked_pairs_lse(similarity(x1, x2), labels, k, group=group)


class CoSENT(Objective, functional=cosent):
    """CoSENT (consistent sentence embedding): a ranking loss over *pairs of pairs*. Every pair
    with a higher gold similarity must get a higher cosine than every pair with a lower one.

    Each input row is a labelled sentence pair ``(x1_i, x2_i, labels_i)``; only the order of
    the labels matters (any strictly increasing transform of them gives the same loss), pairs
    with tied labels are not compared, and a constant added to all cosines changes nothing.
    The loss is a single log-sum-exp over all ordered pairs of the batch, not a mean of
    per-sample terms, so there is no ``reduction``. It is computed in O(N log N) time and O(N)
    memory by sorting the labels (a prefix log-cumsum-exp), never with the N x N matrix.
    Identical to sentence-transformers' ``CoSENTLoss(model, scale=20)`` on the same embeddings.
    Exact under a ``torch.distributed`` process group: the pair scores and labels of every
    rank are gathered (O(N) communication) and every rank gets the loss of the global batch.
    Formula::

        s_i  = scale * cos(x1_i, x2_i)
        loss = log(1 + sum_{(i, j): labels_i > labels_j} exp(s_j - s_i))

    A batch of one pair, or with every label tied, gives 0.

    Args:
        scale (float | Tensor, default None = 20.0): the multiplier of the cosines
            (sentence-transformers' ``scale=20``, inverse temperature).
        temperature (float | Tensor, default None): ``1 / scale`` instead of ``scale`` (give one
            of the two).

    Inputs:
        - ``x1``: (N, d) float, first sentence of each pair (L2-normalised inside).
        - ``x2``: (N, d) float, second sentence of each pair.
        - ``labels``: (N,) real (or bool) gold similarity of each pair; only their order counts.
        - returns a scalar.

    Example::

        import torch
        from contrastkit.losses.ranking import CoSENT

        x1, x2 = torch.randn(6, 16), torch.randn(6, 16)
        labels = torch.tensor([0.9, 0.1, 0.5, 0.5, 0.0, 1.0])
        loss = CoSENT()(x1, x2, labels)
        same = CoSENT(temperature=0.05)(x1, x2, labels)

    See also:
        :class:`AnglE` (CoSENT on the angle score), :class:`MultipleNegativesRanking`
        (in-batch negatives instead of graded labels).

    References:
        Su, "CoSENT (1): A more effective sentence vector scheme than Sentence-BERT",
        https://kexue.fm/archives/8847 (2022). Huang et al., "CoSENT: Consistent Sentence
        Embedding via Similarity Ranking", IEEE/ACM TASLP 2024, DOI:10.1109/TASLP.2024.3402087.
        Reimers, Gurevych, "Sentence-BERT", arXiv:1908.10084 (sentence-transformers'
        ``CoSENTLoss``).
    """
