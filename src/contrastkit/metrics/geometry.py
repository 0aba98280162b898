"""Geometry of an embedding space: alignment, uniformity, tolerance, effective rank, modality gap,
isotropy.

Alignment and uniformity (Wang & Isola, arXiv:2005.10242), tolerance (Wang & Liu,
arXiv:2012.09740), spectra and collapse. Every function
is a pure function on tensors, runs under ``no_grad`` and returns Python floats (or tensors for
spectra).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from .._extras import require
from ._checks import check_compatible, check_embeddings, check_labels, check_positive, normalize

__all__ = [
    "alignment",
    "uniformity",
    "tolerance",
    "effective_rank",
    "rankme",
    "collapse_spectrum",
    "modality_gap",
    "cone_effect",
    "modality_separability",
    "isotropy",
]


@torch.no_grad()
def alignment(x: Tensor, y: Tensor, alpha: float = 2.0) -> float:
    """Alignment loss of Wang & Isola (ICML 2020): ``mean_i ||x_i - y_i||_2^alpha``.

    ``x`` and ``y`` are ``(n, d)`` positive pairs (row ``i`` with row ``i``), L2-normalised first.
    Identical pairs give 0, antipodal pairs give ``2**alpha``.
    """
    check_embeddings("x", x)
    check_embeddings("y", y)
    check_compatible("x", x, "y", y, same_rows=True)
    check_positive("alpha", alpha)
    d = (normalize(x.float()) - normalize(y.float())).norm(dim=1)
    return float(d.pow(alpha).mean())


def _uniformity_one(x: Tensor, t: float) -> float:
    z = normalize(x.double())
    n = z.shape[0]
    sq = torch.pdist(z, p=2).pow(2)  # the n(n-1)/2 unordered distinct pairs
    return float(torch.logsumexp(-t * sq, dim=0) - math.log(n * (n - 1) / 2))


@torch.no_grad()
def uniformity(x: Tensor, t: float = 2.0, y: Optional[Tensor] = None) -> float:
    """Uniformity loss of Wang & Isola (ICML 2020): ``log mean_{i<j} exp(-t ||x_i - x_j||^2)``.

    Over all unordered distinct pairs of the L2-normalised rows of ``x`` (``n >= 2``), in the
    log-sum-exp form. With ``y`` (e.g. the second view) the average of the two uniformities is
    returned. Cost ``O(n^2 d)``: subsample large sets (about 10k points suffice).
    """
    check_embeddings("x", x, min_rows=2)
    check_positive("t", t)
    u = _uniformity_one(x, t)
    if y is None:
        return u
    check_embeddings("y", y, min_rows=2)
    check_compatible("x", x, "y", y)
    return 0.5 * (u + _uniformity_one(y, t))


@torch.no_grad()
def tolerance(x: Tensor, labels: Tensor) -> float:
    """Tolerance of Wang & Liu (CVPR 2021): the mean cosine similarity of same-class pairs,
    ``mean_{i != j, y_i = y_j} <z_i, z_j>`` with ``z`` the L2-normalised rows of ``x``.

    High tolerance: samples of a class stay close (the semantic structure survives); a
    contrastive loss at a very low temperature pushes them apart for uniformity. Ordered pairs
    ``i != j`` of every class (a pair's own self-similarity is left out); the paper writes it as
    ``E_{x,y}[<f(x), f(y)> 1(l(x) = l(y))]``, which is this value times the fraction of
    same-class pairs. Computed from class sums, ``(sum_c ||S_c||^2 - n) / (sum_c n_c^2 - n)``,
    in ``O(n d)`` (no n x n matrix). In ``[-1, 1]``; ``ValueError`` if no class has two samples.
    """
    check_embeddings("x", x)
    check_labels("labels", labels, x.shape[0], x)
    z = normalize(x.double())
    inverse = torch.unique(labels, return_inverse=True)[1]
    n_classes = int(inverse.max()) + 1
    sums = torch.zeros(n_classes, z.shape[1], dtype=z.dtype, device=z.device).index_add(
        0, inverse, z
    )
    counts = torch.bincount(inverse, minlength=n_classes).double()
    pairs = float((counts * (counts - 1)).sum())
    if pairs == 0:
        raise ValueError(
            f"labels has no class with two samples (shape {tuple(labels.shape)}): "
            "tolerance is undefined"
        )
    total = float((sums * sums).sum() - (z * z).sum())
    return total / pairs


def _singular_distribution(z: Tensor, name: str) -> Tensor:
    check_embeddings(name, z)
    s = torch.linalg.svdvals(z.double())
    total = s.sum()
    if float(total) == 0.0:
        raise ValueError(f"{name} is all zeros (shape {tuple(z.shape)}): effective rank undefined")
    return s / total


@torch.no_grad()
def effective_rank(z: Tensor) -> float:
    """Effective rank of Roy & Vetterli (2007): ``exp(-sum_k p_k log p_k)``, ``p_k = s_k / sum s``.

    ``s_k`` are the singular values of the (uncentred) ``(n, d)`` matrix ``z``, computed in
    float64. ``r`` equal non-zero singular values give exactly ``r``; rank-1 gives 1.
    """
    p = _singular_distribution(z, "z")
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def rankme(z: Tensor, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al., ICML 2023): effective rank with ``p_k = s_k / sum s + eps``.

    Same as :func:`effective_rank` but with the paper's ``eps = 1e-7`` added to every ``p_k``
    (so zero singular values contribute a tiny amount); ``z`` is not centred.
    """
    p = _singular_distribution(z, "z") + eps
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def collapse_spectrum(z: Tensor, threshold: float = 1e-6) -> tuple[Tensor, int]:
    """Dimensional-collapse spectrum (Jing et al., ICLR 2022).

    Eigenvalues of the covariance ``(1/n)(z - mean)^T (z - mean)`` in float64, sorted descending
    (plot ``log`` of them), and the collapse count: how many eigenvalues are below
    ``threshold * largest`` (``threshold`` is configurable; the literature fixes no value).
    """
    check_embeddings("z", z, min_rows=2)
    check_positive("threshold", threshold)
    zc = z.double() - z.double().mean(dim=0, keepdim=True)
    cov = zc.T @ zc / z.shape[0]
    ev = torch.linalg.eigvalsh(cov).flip(0).clamp_min(0.0)
    top = float(ev[0])
    count = int((ev < threshold * top).sum()) if top > 0 else int(ev.numel())
    return ev, count


@torch.no_grad()
def modality_gap(a: Tensor, b: Tensor) -> float:
    """Modality gap (Liang et al., NeurIPS 2022): centroid distance ``||mean(A) - mean(B)||_2``.

    ``a`` (modality 1) and ``b`` (modality 2) are L2-normalised first; they need not be paired
    or have the same number of rows.
    """
    check_embeddings("a", a)
    check_embeddings("b", b)
    check_compatible("a", a, "b", b)
    delta = normalize(a.double()).mean(dim=0) - normalize(b.double()).mean(dim=0)
    return float(delta.norm())


@torch.no_grad()
def cone_effect(x: Tensor) -> float:
    """Cone effect (Liang et al., NeurIPS 2022): mean pairwise cosine over pairs ``i != j``."""
    check_embeddings("x", x, min_rows=2)
    z = normalize(x.double())
    n = z.shape[0]
    s = z @ z.T
    return float((s.sum() - s.diagonal().sum()) / (n * (n - 1)))


@torch.no_grad()
def modality_separability(
    a: Tensor, b: Tensor, test_fraction: float = 0.5, seed: int = 0, C: float = 1.0
) -> float:
    """Linear separability of two modalities (Liang et al., 2022; Fahim et al., 2024).

    Held-out accuracy (a fraction in ``[0, 1]``) of a scikit-learn logistic regression that
    predicts the modality from the L2-normalised embedding; stratified split of
    ``test_fraction``, seeded. About 1.0 = disjoint regions, about 0.5 = indistinguishable.
    """
    require("sklearn", "metrics", "contrastkit.metrics.modality_separability")
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    check_embeddings("a", a, min_rows=2)
    check_embeddings("b", b, min_rows=2)
    check_compatible("a", a, "b", b)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    x = torch.cat([normalize(a.double()), normalize(b.double())]).cpu().numpy()
    y = [0] * a.shape[0] + [1] * b.shape[0]
    xtr, xte, ytr, yte = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    clf = LogisticRegression(C=C, max_iter=1000).fit(xtr, ytr)
    return float(clf.score(xte, yte))


@torch.no_grad()
def isotropy(hidden_states: Sequence[Tensor], ndigits: Optional[int] = None) -> float:
    """Isotropy of Su & Collier (TMLR 2023, "Contrastive Search Is What You Need").

    For each text, ``H`` (``L x d`` token states) is row-normalised, ``S = H H^T``; accumulate
    ``sum(S) - L`` and ``L(L-1)``. ``isotropy = 1 - sum(sums) / sum(L(L-1))`` (pooled over token
    pairs, not averaged per text). Texts of length 1 contribute nothing. The paper reports the
    value rounded to 2 decimals: pass ``ndigits=2`` for that.
    """
    if isinstance(hidden_states, Tensor):
        hidden_states = [hidden_states] if hidden_states.dim() == 2 else list(hidden_states)
    total = 0.0
    pairs = 0
    for i, h in enumerate(hidden_states):
        check_embeddings(f"hidden_states[{i}]", h)
        z = normalize(h.double())
        L = z.shape[0]
        total += float((z @ z.T).sum()) - L
        pairs += L * (L - 1)
    if pairs == 0:
        raise ValueError(
            f"isotropy needs at least one text with 2+ tokens; got {len(hidden_states)} texts"
            " all of length <= 1"
        )
    value = 1.0 - total / pairs
    return round(value, ndigits) if ndigits is not None else value
