"""AnglE's angle loss (Li & Li, 2023; sentence-transformers' ``AnglELoss``): CoSENT on the
angle-difference score of two embeddings read as complex vectors. Exact under a process group,
as CoSENT (the O(N) scores and labels are gathered)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ...objective import EPS, Objective, exact_objective, prepare
from .cosent import ranked_pair_loss

__all__ = ["angle", "AnglE", "angle_similarity"]


def angle_similarity(x1: Tensor, x2: Tensor) -> Tensor:
    """AnglE's score of each pair ``(x1_i, x2_i)``: ``|sum_k Re(z_k) + sum_k Im(z_k)|`` of the
    normalised complex quotient ``z = (x1 / x2) * |x2| / |x1|``, the first half of each
    embedding the real part and the second half the imaginary part (an odd dimension is padded
    with one zero). Equals ``|cos(x1, x2) + sum_k (b_k c_k - a_k d_k) / (|x1| |x2|)|`` with
    ``x1 = (a, b)``, ``x2 = (c, d)``. Shape ``(N,)``, in the compute dtype."""
    a, b = prepare(x1, False), prepare(x2, False)
    if a.shape[-1] % 2:
        a, b = F.pad(a, (0, 1)), F.pad(b, (0, 1))
    a, b = F.normalize(a, dim=-1, eps=EPS), F.normalize(b, dim=-1, eps=EPS)
    re1, im1 = a.chunk(2, dim=-1)
    re2, im2 = b.chunk(2, dim=-1)
    real = (re1 * re2 + im1 * im2).sum(-1)
    imag = (im1 * re2 - re1 * im2).sum(-1)
    return (real + imag).abs()


@exact_objective
def angle(
    x1: Tensor,
    x2: Tensor,
    labels: Tensor,
    *,
    scale=None,
    temperature=None,
) -> Tensor:
    """AnglE angle loss of the pairs ``(x1_i, x2_i)`` with gold similarities ``labels``; see
    :class:`AnglE`."""
    return ranked_pair_loss(x1, x2, labels, scale, temperature, angle_similarity)


class AnglE(Objective, functional=angle):
    """AnglE's angle loss: :class:`CoSENT` with the cosine replaced by an angle-difference score
    in complex space, which does not saturate where the cosine's gradient vanishes.

    Each embedding is read as a complex vector, the first half of its coordinates the real
    parts and the second half the imaginary parts (an odd dimension gets one zero appended, as
    in sentence-transformers). The score of a pair is the absolute value of the summed real
    and imaginary parts of their normalised element-wise quotient. It is not a similarity in
    the geometric sense: ``g(x, x) = g(x, -x) = g(x, 2x) = 1``, and rotating every complex
    coordinate of ``x`` by ``theta`` gives ``|cos(theta) - sin(theta)|`` (0 at 45 degrees, 1 at
    90 degrees). The loss is a single log-sum-exp over ordered pairs of the batch (no
    ``reduction``), in O(N log N) by sorting the labels. Identical to sentence-transformers'
    ``AnglELoss(model, scale=20)`` on the same embeddings (the pairwise ``(x1, x2)`` form).
    Exact under a ``torch.distributed`` process group (the O(N) scores and labels of every
    rank are gathered). With ``x1 = (a, b)``, ``x2 = (c, d)`` (halves)::

        g_i  = | sum_k (a_k c_k + b_k d_k + b_k c_k - a_k d_k) | / (|x1_i| |x2_i|)
        s_i  = scale * g_i
        loss = log(1 + sum_{(i, j): labels_i > labels_j} exp(s_j - s_i))

    Args:
        scale (float | Tensor, default None = 20.0): the multiplier of the angle scores
            (AnglE's and sentence-transformers' 20).
        temperature (float | Tensor, default None): ``1 / scale`` instead of ``scale`` (give one
            of the two).

    Inputs:
        - ``x1``: (N, d) float, first sentence of each pair.
        - ``x2``: (N, d) float, second sentence of each pair.
        - ``labels``: (N,) real (or bool) gold similarity of each pair; only their order counts.
        - returns a scalar.

    Example::

        import torch
        from contrastkit.losses.ranking import AnglE, angle_similarity

        x1, x2 = torch.randn(6, 16), torch.randn(6, 16)
        labels = torch.tensor([0.9, 0.1, 0.5, 0.5, 0.0, 1.0])
        loss = AnglE()(x1, x2, labels)
        scores = angle_similarity(x1, x2)  # (6,), each in [0, sqrt(2)]

    See also:
        :class:`CoSENT` (the same ranking loss on cosines).

    References:
        Li, Li, "AnglE-optimized Text Embeddings", arXiv:2309.12871. Su, "CoSENT",
        https://kexue.fm/archives/8847 (2022). Reimers, Gurevych, "Sentence-BERT",
        arXiv:1908.10084 (sentence-transformers' ``AnglELoss``).
    """
