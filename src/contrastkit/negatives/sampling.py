"""Samplers that decide which pairs or batches are used: DebCSE (inverse-propensity weighted
pair selection), MCL's feature-aware batch sampler and DBPM's bad-pair re-weighting."""

from __future__ import annotations

import math
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .._extras import require
from .._validation import check_embeddings, check_tensor

__all__ = [
    "DebCSESampler",
    "histogram_propensity",
    "combine_stage_labels",
    "cluster_features",
    "FeatureAwareSampler",
    "BadPairMiner",
]


def _vec(name: str, x, n: Optional[int] = None, kind: str = "real") -> Tensor:
    """A non-empty 1-D tensor of ``kind`` ("real", "float" or "int"), finite, ``n`` long."""
    return check_tensor(name, x, ndim=1, kind=kind, rows=n, min_rows=1)


def histogram_propensity(surface: Tensor, n_bins: int = 10) -> Tensor:
    """Propensity of each pair: the frequency of its surface-feature bin among all candidates
    (equal-width bins over the observed range)."""
    surface = _vec("surface", surface).double()
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    lo, hi = float(surface.min()), float(surface.max())
    if hi == lo:
        return torch.ones_like(surface)
    b = ((surface - lo) / (hi - lo) * n_bins).long().clamp(max=n_bins - 1)
    freq = torch.bincount(b, minlength=n_bins).double() / surface.numel()
    return freq[b]


class DebCSESampler:
    """Inverse-propensity-weighted pair selection in the spirit of DebCSE (Miao et al., "DebCSE:
    Rethinking Unsupervised Contrastive Sentence Embedding Learning in the Debiasing
    Perspective", CIKM 2023). No official code; the paper gives a sketch and so is this::

        w_pos = score / propensity,   w_neg = (1 - score) / propensity,   both clipped at clip

    ``score`` in [0, 1] is a reference encoder's semantic similarity of a candidate pair,
    ``propensity`` the probability that surface rules (lexical overlap, length difference) pick
    the pair: ``histogram_propensity(surface, n_bins)`` by default, or any callable
    ``surface -> propensity``. ``sample(k, score, surface, kind="positive"|"negative",
    generator=None)`` draws ``k`` pair indices without replacement with probability
    proportional to the weights; a constant propensity reduces to score-proportional sampling.
    """

    def __init__(
        self,
        propensity: Callable[[Tensor], Tensor] | str = "histogram",
        *,
        n_bins: int = 10,
        clip: Optional[float] = 100.0,
        min_propensity: float = 1e-6,
    ):
        if propensity == "histogram":
            self.propensity_fn = lambda s: histogram_propensity(s, n_bins)
        elif callable(propensity):
            self.propensity_fn = propensity
        else:
            raise ValueError(f"propensity must be 'histogram' or a callable, got {propensity!r}")
        if clip is not None and (not isinstance(clip, (int, float)) or clip <= 0):
            raise ValueError(f"clip must be a number > 0 or None, got {clip!r}")
        self.clip, self.min_propensity = clip, min_propensity

    def weights(self, score: Tensor, surface: Tensor, kind: str = "positive") -> Tensor:
        score = _vec("score", score).double()
        surface = _vec("surface", surface, score.shape[0])
        if bool((score < 0).any()) or bool((score > 1).any()):
            raise ValueError("score must lie in [0, 1]")
        if kind not in ("positive", "negative"):
            raise ValueError(f"kind must be 'positive' or 'negative', got {kind!r}")
        prop = torch.as_tensor(self.propensity_fn(surface)).double()
        if prop.shape != score.shape or bool((prop <= 0).any()) or bool((prop > 1).any()):
            raise ValueError(f"propensities must be in (0, 1] with shape {tuple(score.shape)}")
        base = score if kind == "positive" else 1.0 - score
        w = base / prop.clamp(min=self.min_propensity)
        return w if self.clip is None else w.clamp(max=self.clip)

    def sample(
        self,
        k: int,
        score: Tensor,
        surface: Tensor,
        kind: str = "positive",
        generator: Optional[torch.Generator] = None,
    ) -> Tensor:
        w = self.weights(score, surface, kind)
        n_nonzero = int((w > 0).sum())
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if k > n_nonzero:
            raise ValueError(f"k={k} is larger than the {n_nonzero} pairs with non-zero weight")
        return torch.multinomial(w.cpu(), k, replacement=False, generator=generator).to(w.device)


# ---------------------------------------------------------------------------- MCL (C9)


def combine_stage_labels(stage_labels: Sequence[Tensor], n_clusters: int) -> Tensor:
    """MCL pseudo-labels: the joint cell ``sum_r c_r K^(s - r)`` of all finished stages'
    clusterings (the intended rule; the official loop uses only the latest stage)."""
    if isinstance(stage_labels, Tensor) or not isinstance(stage_labels, (list, tuple)):
        raise ValueError(
            f"stage_labels must be a list of (n,) tensors, got {type(stage_labels).__name__}"
        )
    if not stage_labels:
        raise ValueError("stage_labels must hold at least one clustering")
    n = _vec("stage_labels[0]", stage_labels[0], kind="int").shape[0]
    out = torch.zeros(n, dtype=torch.long)
    for r, c in enumerate(stage_labels):
        c = _vec(f"stage_labels[{r}]", c, n, kind="int").long().cpu()
        if int(c.min()) < 0 or int(c.max()) >= n_clusters:
            raise ValueError(f"stage_labels[{r}] must lie in [0, n_clusters={n_clusters})")
        out = out * n_clusters + c
    return out


def cluster_features(
    features: Tensor,
    n_clusters: int = 10,
    *,
    seed: int = 0,
    batch_size: int = 1_000_000,
    n_init="auto",
) -> Tensor:
    """MCL's per-stage clustering: MiniBatch k-means (scikit-learn) of L2-normalised features."""
    cluster = require("sklearn.cluster", "metrics", "cluster_features")
    MiniBatchKMeans = cluster.MiniBatchKMeans

    check_embeddings("features", features)
    x = torch.nn.functional.normalize(features.detach().double(), dim=-1).cpu().numpy()
    if not 1 <= n_clusters <= x.shape[0]:
        raise ValueError(f"n_clusters must be in [1, {x.shape[0]}], got {n_clusters}")
    km = MiniBatchKMeans(
        n_clusters=n_clusters,
        batch_size=min(batch_size, x.shape[0]),
        max_iter=100,
        tol=1e-5,
        random_state=seed,
        n_init=n_init,
    )
    return torch.as_tensor(km.fit_predict(x), dtype=torch.long)


class FeatureAwareSampler(torch.utils.data.Sampler):
    """MCL feature-aware batch sampler (Zhang et al., "Learning the Unlearned: Mitigating
    Feature Suppression in Contrastive Learning", ECCV 2024): every batch is drawn from one
    pseudo-label group, so all in-batch negatives share the anchor's earlier cluster.

    Per epoch (``set_epoch``), each group is shuffled, truncated to a multiple of
    ``world_size * batch_size`` and dealt round-robin to ranks; then the groups are cycled, each
    rank's batch filled only from the current group; a group that runs out mid-batch loses its
    partial batch. Yields lists of sample indices for this ``rank``.
    """

    def __init__(
        self,
        pseudo_labels: Tensor,
        batch_size: int,
        *,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
    ):
        self.labels = _vec("pseudo_labels", pseudo_labels, kind="int").long().cpu()
        for name, v in (("batch_size", batch_size), ("world_size", world_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.batch_size, self.world_size, self.rank, self.seed = batch_size, world_size, rank, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        step = self.world_size * self.batch_size
        queues = []
        for lab in torch.unique(self.labels).tolist():
            members = (self.labels == lab).nonzero().squeeze(1)
            members = members[torch.randperm(members.numel(), generator=g)]
            keep = members.numel() // step * step
            if keep:
                mine = members[:keep][self.rank :: self.world_size]  # round-robin deal
                queues.append(mine.tolist())
        batches, pos = [], [0] * len(queues)
        alive = list(range(len(queues)))
        while alive:
            nxt = []
            for q in alive:
                if pos[q] + self.batch_size <= len(queues[q]):
                    batches.append(queues[q][pos[q] : pos[q] + self.batch_size])
                    pos[q] += self.batch_size
                    nxt.append(q)
            alive = nxt
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches())

    def __len__(self) -> int:
        step = self.world_size * self.batch_size
        counts = torch.bincount(self.labels - self.labels.min())
        return int(sum(int(c) // step * step // self.world_size // self.batch_size for c in counts))


# ---------------------------------------------------------------------------- DBPM (C10)


class BadPairMiner:
    """Dynamic Bad Pair Mining (Lan et al., "Towards Enhancing Time Series Contrastive Learning:
    A Dynamic Bad Pair Mining Approach", ICLR 2024; lanxiang1017/DynamicBadPairMining_ICLR24).

    Keeps each sample's history of per-pair losses. At each epoch start (``start_epoch``) from
    ``warm_epochs`` on: ``m_id = mean_r(l_r (r + 1) / max_epochs)``, ``mu``, ``sigma`` over ids,
    noisy positives ``m <= mu - cut_np sigma``, faulty positives ``m >= mu + cut_fp sigma``.
    ``__call__(ids, losses)`` records the losses and returns ``mean(w * losses)`` with
    ``w = phi(l; mu, sigma)`` (Gaussian density, constant) for flagged ids, 1 otherwise;
    ``normalize_weight=True`` divides by ``phi(mu)`` so ``w <= 1`` (not the official default).
    """

    def __init__(
        self,
        *,
        cut_np: float = 2.0,
        cut_fp: float = 3.0,
        warm_epochs: int = 50,
        max_epochs: int = 80,
        normalize_weight: bool = False,
    ):
        if max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {max_epochs}")
        self.cut_np, self.cut_fp = float(cut_np), float(cut_fp)
        self.warm_epochs, self.max_epochs = warm_epochs, max_epochs
        self.normalize_weight = normalize_weight
        self.memory: dict[int, list[float]] = {}
        self.mu = self.sigma = None
        self.flagged: frozenset = frozenset()
        self.noisy: frozenset = frozenset()
        self.faulty: frozenset = frozenset()

    def record(self, ids: Tensor, losses: Tensor) -> None:
        ids = _vec("ids", ids, kind="int").long().tolist()
        vals = _vec("losses", losses, len(ids), kind="float").detach().double().tolist()
        for i, v in zip(ids, vals):
            self.memory.setdefault(i, []).append(v)

    def start_epoch(self, epoch: int) -> None:
        """Recompute the statistics and flagged sets (fixed for the epoch)."""
        self.noisy = self.faulty = self.flagged = frozenset()
        if epoch < self.warm_epochs or not self.memory:
            return
        ids = list(self.memory)
        m = np.array(
            [
                np.mean([v * (r + 1) / self.max_epochs for r, v in enumerate(self.memory[i])])
                for i in ids
            ]
        )
        self.mu, self.sigma = float(m.mean()), float(m.std())
        if self.sigma == 0:
            return
        self.noisy = frozenset(i for i, v in zip(ids, m) if v <= self.mu - self.cut_np * self.sigma)
        self.faulty = frozenset(
            i for i, v in zip(ids, m) if v >= self.mu + self.cut_fp * self.sigma
        )
        self.flagged = self.noisy | self.faulty

    def weights(self, ids: Tensor, losses: Tensor) -> Tensor:
        ids_l = _vec("ids", ids, kind="int").long().tolist()
        losses = _vec("losses", losses, len(ids_l), kind="float")
        w = torch.ones_like(losses)
        if not self.flagged:
            return w
        flag = torch.tensor([i in self.flagged for i in ids_l], device=losses.device)
        s = self.sigma
        dens = torch.exp(-0.5 * ((losses.detach() - self.mu) / s) ** 2) / (
            s * math.sqrt(2 * math.pi)
        )
        if self.normalize_weight:
            dens = dens * (s * math.sqrt(2 * math.pi))
        return torch.where(flag, dens, w)

    def __call__(self, ids: Tensor, losses: Tensor) -> Tensor:
        w = self.weights(ids, losses)
        self.record(ids, losses)
        return (w * losses).mean()
