"""AMCL: Adaptive Multi-head Contrastive Learning (Wang, Koniusz, Gedeon, Zheng; ECCV 2024,
arXiv 2310.05615; LeiWangR/cl), the SimCLR form of the README's eq. 2.1.

Two views through ``C`` projection heads, ``z1, z2`` (N, C, d'), L2-normalised per head. Each
of the ``2N`` vectors of head ``c`` is an anchor: its positive is the other view of the same
sample, its negatives the other ``2N - 2`` vectors (as NT-Xent). With raw cosines ``s`` and
pair-adaptive temperatures ``tau(a, b)`` (one network per head)::

    l_i = sum_c [ -s_i,pos / tau(z_i, z_i,pos) + mean_{n in top_k(i)} s_in / tau(z_i, z_n)
                  + beta Omega(tau(z_i, z_i,pos)) - beta mean_{n in top_k(i)} Omega(tau(z_i, z_n)) ]
    Omega(tau) = (d'/2) log tau + 1/tau,       loss = mean over the 2N anchors

``top_k(i)``: the ``topk`` most similar negatives by raw cosine (``topk = 1``: the ``max_n``
of eq. 2.1; gradients reach only the selected negatives). Temperature network (per head, as
``src/amcl_components``): ``cat(a, b) -> Linear(2d', 128) -> ReLU -> Linear(128, 1)``,
``tau = sigmoid(.) (max_temperature - min_temperature) + min_temperature``, fed the
normalised vectors; tau in
[1e-5, 2], beta 0.1, C = 3. The later ``amcl/losses.py`` of the same repository uses a shared
bilinear temperature head, a top-100 mean, and ``log tau + 1/tau`` on the negative side; those
are reachable with ``temperature_fn``/``topk`` except the last (``omega_dim`` is per loss).

Not on the log-sum-exp engine: the objective needs a per-row top-k search
and the features of the selected pairs for the temperature network. The search is tiled (row
blocks of ``chunk_size`` against all candidates, no gradient, memory O(b N)); the loss is then
O(N k d) autograd on the gathered pairs.
"""

from __future__ import annotations

from typing import Callable, Optional, Union, cast

import torch
from torch import Tensor

from ..._validation import check_compatible, check_embeddings, check_reduction, optional_int
from ...objective import prepare, rank_local_objective, reduce

__all__ = ["amcl", "AMCL", "omega", "hardest_negatives"]

TemperatureFn = Callable[[int, Tensor, Tensor], Tensor]


def omega(tau: Tensor, dim: int) -> Tensor:
    """The temperature regulariser ``(dim/2) log tau + 1/tau``."""
    return 0.5 * dim * torch.log(tau) + 1.0 / tau


def hardest_negatives(Z: Tensor, k: int, block: Optional[int] = None) -> Tensor:
    """Indices (2N, k) of each stacked-view row's ``k`` most similar vectors, excluding itself
    and its other view (``(i + N) mod 2N``); row blocks of ``block`` rows, no gradient."""
    n2 = Z.shape[0]
    N = n2 // 2
    b = block or min(n2, max(256, (1 << 24) // n2))  # <= 64 MiB fp32 blocks of >= 256 rows
    out = torch.empty(n2, k, dtype=torch.long, device=Z.device)
    with torch.no_grad():
        Zd = Z.detach()
        for r0 in range(0, n2, b):
            r1 = min(r0 + b, n2)
            s = Zd[r0:r1] @ Zd.t()
            rows = torch.arange(r1 - r0, device=Z.device)
            gi = torch.arange(r0, r1, device=Z.device)
            s[rows, gi] = float("-inf")
            s[rows, (gi + N) % n2] = float("-inf")
            out[r0:r1] = s.topk(k, dim=1).indices
    return out


@rank_local_objective
def amcl(
    z1: Tensor,
    z2: Tensor,
    temperature_fn: TemperatureFn,
    *,
    beta: float = 0.1,
    topk: int = 1,
    omega_dim: Optional[int] = None,
    reduction: str = "mean",
    chunk_size: Optional[int] = None,
) -> Tensor:
    """AMCL of two views ``z1, z2`` (N, C, d) (or (N, d) for one head).

    ``temperature_fn(head, a, b)`` returns the temperatures (n,) of the pairs of rows of ``a``
    and ``b`` (n, d) (normalised); ``omega_dim`` defaults to d. ``reduction="none"``: per-sample
    values (N,), the mean of the sample's two anchors summed over heads."""
    check_reduction(reduction)
    optional_int("chunk_size", chunk_size)
    check_embeddings("z1", z1, ndim=(2, 3))
    check_embeddings("z2", z2, ndim=(2, 3))
    check_compatible("z1", z1, "z2", z2, same_rows=True)
    if z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if not callable(temperature_fn):
        raise ValueError("temperature_fn must be callable (head, a, b) -> temperatures (n,)")
    if not isinstance(beta, (int, float)) or beta < 0:
        raise ValueError(f"beta must be a number >= 0, got {beta!r}")
    if z1.dim() == 2:
        z1, z2 = z1[:, None], z2[:, None]
    N, C, d = z1.shape
    if N < 2:
        raise ValueError(f"AMCL needs at least 2 samples (N >= 2), got shape {tuple(z1.shape)}")
    if not isinstance(topk, int) or not 1 <= topk <= 2 * N - 2:
        raise ValueError(f"topk must be an integer in [1, 2N - 2 = {2 * N - 2}], got {topk!r}")
    dim = d if omega_dim is None else omega_dim
    n2 = 2 * N
    partner = (torch.arange(n2, device=z1.device) + N) % n2
    rows: Union[float, Tensor] = 0.0
    for c in range(C):
        Z = prepare(torch.cat([z1[:, c], z2[:, c]]), True)
        idx = hardest_negatives(Z, topk, chunk_size)
        zp = Z[partner]
        zn = Z[idx]  # (2N, k, d)
        s_pos = (Z * zp).sum(-1)
        s_neg = (Z[:, None] * zn).sum(-1)
        tau_pos = _temps(temperature_fn, c, Z, zp, n2)
        tau_neg = _temps(
            temperature_fn, c, Z.repeat_interleave(topk, 0), zn.reshape(-1, d), n2 * topk
        ).view(n2, topk)
        rows = rows + (
            -s_pos / tau_pos
            + (s_neg / tau_neg).mean(1)
            + beta * omega(tau_pos, dim)
            - beta * omega(tau_neg, dim).mean(1)
        )
    assert isinstance(rows, Tensor)  # C >= 1 heads
    return reduce((rows[:N] + rows[N:]) / 2, reduction, group=None)


def _temps(fn, c, a, b, n) -> Tensor:
    t = fn(c, a, b)
    if not isinstance(t, Tensor) or t.shape != (n,):
        shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"temperature_fn must return shape ({n},), got {shape}")
    if not bool((t > 0).all()) or not bool(torch.isfinite(t).all()):
        raise ValueError("temperature_fn must return finite temperatures > 0")
    return t.to(a.dtype)


class AMCL(torch.nn.Module):
    """AMCL: adaptive multi-head contrastive learning. Several projection heads each contrast
    the two views, and every pair gets its own temperature from a small network of the pair's
    features, regularised so that temperatures adapt to how similar the pair is (Wang et al.).

    With raw cosines ``s``, pair temperatures ``tau(a, b)`` and ``top_k(i)`` the ``topk`` most
    similar negatives of anchor ``i`` (``topk = 1``: the hardest)::

        l_i = sum_c [ -s_i,pos / tau(z_i, z_i,pos) + mean_{n in top_k(i)} s_in / tau(z_i, z_n)
                      + beta Omega(tau(z_i, z_i,pos))
                      - beta mean_{n in top_k(i)} Omega(tau(z_i, z_n)) ]
        Omega(tau) = (d'/2) log tau + 1/tau,     loss = mean over the 2N anchors

    Temperature network per head: ``cat(a, b) -> Linear(2 d', hidden_dim) -> ReLU ->
    Linear(hidden_dim, 1)``, ``tau = sigmoid(.) (max_temperature - min_temperature) +
    min_temperature``; its parameters belong to this module (optimise them with the model).
    The functional :func:`amcl` takes any ``temperature_fn(head, a, b)``. Rank-local (a
    top-k search over the batch): under a process group it raises unless called inside
    ``contrastkit.distributed.local()``.

    Args:
        dim (int, default 128): projection dimension d'; also Omega's d' unless ``omega_dim``.
        num_heads (int, default 3): C.
        beta (float, default 0.1): regulariser weight, >= 0.
        min_temperature (float, default 1e-5), max_temperature (float, default 2.0): range of
            the pair temperatures (the official ``tau_min`` / ``tau_max``).
        hidden_dim (int, default 128): temperature network width.
        topk (int, default 1): negatives per anchor (1 = the max of the paper's eq.).
        omega_dim (int or None, default None): d' of Omega (None: ``dim``).
        reduction (str, default "mean"): "mean" | "sum" | "none" (per-sample terms (N,)).
        chunk_size (int or None, default None): rows per block of the top-k search.

    Inputs:
        - ``z1``, ``z2`` (N, num_heads, dim) float, N >= 2: two views through every head; row
          ``i`` of each is a positive pair, the other rows negatives.

    Example::

        import torch
        import contrastkit as ck

        loss_fn = ck.AMCL(dim=16, num_heads=2, hidden_dim=8)
        z1, z2 = torch.randn(8, 2, 16), torch.randn(8, 2, 16)
        loss = loss_fn(z1, z2)

    See also:
        :class:`iSogCLR`, :class:`NTXent`.

    References:
        Wang, Koniusz, Gedeon, Zheng, "Adaptive Multi-head Contrastive Learning", ECCV 2024,
        arXiv:2310.05615 (github.com/LeiWangR/cl).
    """

    def __init__(
        self,
        dim: int = 128,
        num_heads: int = 3,
        beta: float = 0.1,
        min_temperature: float = 1e-5,
        max_temperature: float = 2.0,
        hidden_dim: int = 128,
        topk: int = 1,
        omega_dim: Optional[int] = None,
        reduction: str = "mean",
        chunk_size: Optional[int] = None,
    ):
        super().__init__()
        for name, v in (("dim", dim), ("num_heads", num_heads), ("hidden_dim", hidden_dim)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not (0 < min_temperature < max_temperature):
            raise ValueError(
                f"need 0 < min_temperature < max_temperature, "
                f"got min_temperature={min_temperature}, max_temperature={max_temperature}"
            )
        if not isinstance(beta, (int, float)) or beta < 0:
            raise ValueError(f"beta must be a number >= 0, got {beta!r}")
        check_reduction(reduction)
        optional_int("chunk_size", chunk_size)
        optional_int("omega_dim", omega_dim)
        optional_int("topk", topk)
        self.dim, self.num_heads, self.beta = dim, num_heads, beta
        self.min_temperature, self.max_temperature = float(min_temperature), float(max_temperature)
        self.topk, self.omega_dim = topk, omega_dim
        self.reduction, self.chunk_size = reduction, chunk_size
        self.temperature_nets = torch.nn.ModuleList(
            torch.nn.Sequential(
                torch.nn.Linear(2 * dim, hidden_dim),
                torch.nn.ReLU(),
                torch.nn.Linear(hidden_dim, 1),
            )
            for _ in range(num_heads)
        )

    def temperature(self, head: int, a: Tensor, b: Tensor) -> Tensor:
        """Pair temperatures (n,) of head ``head`` for rows of ``a``, ``b`` (n, dim)."""
        x = torch.cat([a, b], dim=-1)
        # the ModuleList holds Sequential(Linear, ReLU, Linear) (built in __init__)
        net = cast(torch.nn.Sequential, self.temperature_nets[head])
        first = cast(torch.nn.Linear, net[0])
        r = net(x.to(first.weight.dtype)).squeeze(-1)
        return (
            torch.sigmoid(r) * (self.max_temperature - self.min_temperature) + self.min_temperature
        )

    def forward(self, z1: Tensor, z2: Tensor) -> Tensor:
        check_embeddings("z1", z1, ndim=3)
        if z1.dim() != 3 or z1.shape[1:] != (self.num_heads, self.dim):
            raise ValueError(
                f"z1 must have shape (N, num_heads={self.num_heads}, dim={self.dim}), "
                f"got {tuple(z1.shape)}"
            )
        return amcl(
            z1,
            z2,
            self.temperature,
            beta=self.beta,
            topk=self.topk,
            omega_dim=self.omega_dim,
            reduction=self.reduction,
            chunk_size=self.chunk_size,
        )
