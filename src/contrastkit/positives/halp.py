"""HaLP: hallucinated latent positives in closed form (Shah et al., "HaLP: Hallucinating Latent
Positives for Skeleton-based Self-Supervised Learning of Actions", CVPR 2023; official code
anshulbshah/HaLP, ``moco/generator.py``).

For a key ``k`` (unit), its closest prototype ``p_c`` and a target prototype ``p_t``::

    omega = arccos(p_t . k),  a = k . (p_c - p_t),  kappa = (1 - p_t . p_c) / (a + 1e-8)
    t_max = atan( sin omega / (kappa + cos omega + 1e-8) ) / (omega + 1e-8)
    g(t)  = normalize( [sin((1 - t) omega) k + sin(t omega) p_t] / (sin omega + 1e-8) )

``t_max`` is where the geodesic from ``k`` to ``p_t`` crosses the bisector of ``p_c`` and ``p_t``
(``g . p_c = g . p_t``): the farthest point still closer to the key's own prototype. Each point
uses ``t = (1 - u) t_max``, ``u ~ U(0, lambda_pos)`` (``lambda_pos = 1000``: ``t = t_max - 0.01``).
The epsilons are the official code's.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .._validation import (
    check_compatible,
    check_embeddings,
    check_positive,
    check_temperature,
    check_tensor,
)

__all__ = ["halp_t_max", "slerp", "spherical_kmeans", "HaLP"]

EPS = 1e-8


def _points(**named: Tensor) -> tuple:
    """Floating, finite ``(..., d)`` tensors whose shapes broadcast (a ValueError names them)."""
    for name, x in named.items():
        check_tensor(name, x, kind="float", min_rows=1)
        if x.dim() == 0 or x.shape[-1] == 0:
            raise ValueError(f"{name} must have a non-empty last dimension, got {tuple(x.shape)}")
    try:
        torch.broadcast_shapes(*(x.shape for x in named.values()))
    except RuntimeError:
        shapes = ", ".join(f"{n} {tuple(x.shape)}" for n, x in named.items())
        raise ValueError(f"shapes do not broadcast: {shapes}") from None
    return tuple(named.values())


def halp_t_max(key: Tensor, p_own: Tensor, p_target: Tensor) -> Tensor:
    """Closed-form largest geodesic fraction (broadcast over leading dimensions)."""
    _points(key=key, p_own=p_own, p_target=p_target)
    omega = torch.acos((p_target * key).sum(-1).clamp(-1.0, 1.0))
    a = (key * (p_own - p_target)).sum(-1)
    kap = (1 - (p_target * p_own).sum(-1)) / (a + EPS)
    return torch.atan(torch.sin(omega) / (kap + torch.cos(omega) + EPS)) / (omega + EPS)


def slerp(start: Tensor, end: Tensor, t: Tensor, normalize: bool = True) -> Tensor:
    """Spherical interpolation from ``start`` (t = 0) towards ``end`` (t = 1), official epsilons.

    ``start``, ``end`` (..., d); ``t`` broadcastable to their leading dimensions ``(...)``."""
    _points(start=start, end=end)
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        t = torch.tensor(float(t), dtype=start.dtype, device=start.device)
    check_tensor("t", t, kind="float", min_rows=1)
    try:
        torch.broadcast_shapes(t.shape, start.shape[:-1], end.shape[:-1])
    except RuntimeError:
        raise ValueError(
            f"t {tuple(t.shape)} must broadcast to the leading dimensions of start "
            f"{tuple(start.shape)} and end {tuple(end.shape)}"
        ) from None
    omega = torch.acos((start * end).sum(-1).clamp(-1.0, 1.0))
    den = torch.sin(omega) + EPS
    a = (torch.sin((1 - t) * omega) / den)[..., None]
    b = (torch.sin(t * omega) / den)[..., None]
    g = a * start + b * end
    return F.normalize(g, dim=-1) if normalize else g


def spherical_kmeans(
    x: Tensor,
    n_clusters: int,
    *,
    max_iter: int = 100,
    tol: float = 1e-3,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """Spherical k-means of unit rows ``x`` (n, d) with k-means++ seeding (cosine distance);
    returns unit centroids (C, d). Stops when no centroid moves more than ``tol``."""
    check_embeddings("x", x)
    n = x.shape[0]
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, int) or not 1 <= n_clusters <= n:
        raise ValueError(f"n_clusters must be an integer in [1, {n}], got {n_clusters!r}")
    x = F.normalize(x.detach(), dim=-1)
    first = int(torch.randint(n, (1,), generator=generator))
    cents = [x[first]]
    dist = (1 - x @ x[first]).clamp(min=0)
    for _ in range(1, n_clusters):
        p = dist.double().cpu()
        i = int(torch.multinomial(p, 1, generator=generator)) if p.sum() > 0 else 0
        cents.append(x[i])
        dist = torch.minimum(dist, (1 - x @ x[i]).clamp(min=0))
    C = torch.stack(cents)
    for _ in range(max_iter):
        assign = (x @ C.T).argmax(1)
        sums = torch.zeros_like(C).index_add_(0, assign, x)
        empty = torch.bincount(assign, minlength=n_clusters) == 0
        new = torch.where(empty[:, None], C, F.normalize(sums, dim=-1))
        shift = float((new - C).norm(dim=1).max())
        C = new
        if shift <= tol:
            break
    return C


class HaLP:
    """Hallucinated latent positives for a MoCo step.

    Args:
        n_prototypes: ``C`` (20); n_positives: ``P`` per key (100); lambda_pos: hardness (0.8);
        skip, n_candidates: target prototypes are the ``n_candidates`` most similar after
            skipping the ``skip`` most similar (1, 20: every prototype except the closest);
        weight: ``mu`` of the extra loss (1.0; NTU-60 script 2); temperature: tau (0.07).

    ``fit_prototypes(bank, generator)`` (spherical k-means of the ``R = 256`` most recent queue
    entries, every ``U`` iterations after ``2K + 1`` keys, the caller's schedule);
    ``generate(key, generator)`` -> ``(points (N, P, d) unit & detached, good (N, P) bool)``,
    ``good`` = the point's nearest prototype is still the key's own;
    ``loss(query, points, good) = mu * -(sum_good q_i . g / tau) / (#good + 1e-8)``.
    """

    def __init__(
        self,
        n_prototypes: int = 20,
        n_positives: int = 100,
        *,
        lambda_pos: float = 0.8,
        skip: int = 1,
        n_candidates: int = 20,
        weight: float = 1.0,
        temperature: float = 0.07,
    ):
        for name, v in (
            ("n_prototypes", n_prototypes),
            ("n_positives", n_positives),
            ("skip", skip),
            ("n_candidates", n_candidates),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if skip >= n_prototypes:
            raise ValueError(f"skip={skip} leaves no target among {n_prototypes} prototypes")
        check_positive("lambda_pos", lambda_pos)
        check_temperature("temperature", temperature)
        self.n_prototypes, self.n_positives = n_prototypes, n_positives
        self.lambda_pos, self.skip, self.n_candidates = float(lambda_pos), skip, n_candidates
        self.weight, self.temperature = float(weight), float(temperature)
        self.prototypes: Optional[Tensor] = None

    def fit_prototypes(self, bank: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        check_embeddings("bank", bank)
        self.prototypes = spherical_kmeans(bank, self.n_prototypes, generator=generator)
        return self.prototypes

    def targets(self, key: Tensor) -> tuple[Tensor, Tensor]:
        """(closest prototype (N,), candidate target prototypes (N, n) by ascending rank)."""
        S = key @ self.prototypes.T
        order = torch.argsort(S, dim=1)  # ascending
        C = S.shape[1]
        lo = max(0, C - self.skip - self.n_candidates)
        return order[:, -1], order[:, lo : C - self.skip]

    def generate(self, key: Tensor, generator: Optional[torch.Generator] = None):
        if self.prototypes is None:
            raise ValueError("call fit_prototypes(bank) before generate()")
        check_embeddings("key", key)
        check_compatible("key", key, "prototypes", self.prototypes)
        k = F.normalize(key.detach(), dim=-1)
        P = self.prototypes
        N = k.shape[0]
        own, cand = self.targets(k)
        j = torch.randint(cand.shape[1], (N, self.n_positives), generator=generator)
        tgt = cand.gather(1, j.to(cand.device))
        p_t, p_c = P[tgt], P[own][:, None].expand(N, self.n_positives, -1)
        ks = k[:, None].expand_as(p_t)
        t_max = halp_t_max(ks, p_c, p_t)
        if self.lambda_pos == 1000.0:
            t = t_max - 1e-2
        else:
            u = torch.rand(N, self.n_positives, generator=generator).to(k) * self.lambda_pos
            t = (1 - u) * t_max
        g = slerp(ks, p_t, t)
        good = (g @ P.T).argmax(-1) == own[:, None]
        return g, good

    def loss(self, query: Tensor, points: Tensor, good: Tensor) -> Tensor:
        check_embeddings("query", query)
        q = F.normalize(query, dim=-1)
        sim = torch.einsum("nd,npd->np", q, points.detach()) / self.temperature
        n_good = good.sum().to(sim.dtype)
        return self.weight * -(sim * good).sum() / (n_good + EPS)
