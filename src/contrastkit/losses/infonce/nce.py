"""Noise-contrastive estimation (Gutmann & Hyvarinen, AISTATS 2010) of an unnormalised model,
and the compositional (moving-average) estimator of its maximum-likelihood loss.

    G(x) = f(x) - log(nu q(x))
    nce  = (1 / N) [ sum_data softplus(-G(x)) + sum_noise softplus(G(y)) ]

    nll  = -mean_data f(x) + log E_{y ~ q}[exp(f(y)) / q(y)]
    u   <- (1 - gamma) u + gamma mean_noise exp(f(y) - log q(y))       (the log-partition state)
    grad = -mean_data grad f(x) + (1 / u) mean_noise exp(f(y) - log q(y)) grad f(y)

``f`` is the model's unnormalised log-density (a learned log-normaliser is part of it), ``q`` the
noise density, ``nu`` noise samples per data point. Elementwise: every sample is scored by its
own log-densities, so there is no pairwise reduction for the engine (O(N + M)).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._validation import check_range, check_reduction, check_tensor
from ...objective import (
    Objective,
    exact_objective,
    global_rows,
    objective_group,
    rank_local_objective,
    reduce,
)

__all__ = ["nce", "NCE", "compositional_nll", "CompositionalNLL"]


@exact_objective
def nce(
    log_model_data: Tensor,
    log_model_noise: Tensor,
    log_noise_data: Tensor,
    log_noise_noise: Tensor,
    *,
    reduction: str = "mean",
) -> Tensor:
    """Binary NCE loss of an unnormalised log-density; see :class:`NCE`."""
    group = objective_group()
    check_tensor("log_model_data", log_model_data, ndim=1, min_rows=0)
    N = log_model_data.shape[0]
    check_tensor("log_noise_data", log_noise_data, ndim=1, rows=N, min_rows=0, ref=log_model_data)
    check_tensor("log_model_noise", log_model_noise, ndim=(1, 2), min_rows=0, ref=log_model_data)
    if log_model_noise.dim() == 2 and log_model_noise.shape[0] != N:
        raise ValueError(
            f"log_model_noise (N, K) must have one row per data point (N={N}), got shape "
            f"{tuple(log_model_noise.shape)}"
        )
    check_tensor(
        "log_noise_noise",
        log_noise_noise,
        shape=tuple(log_model_noise.shape),
        min_rows=0,
        ref=log_model_data,
    )
    for name, x in (("log_noise_data", log_noise_data), ("log_noise_noise", log_noise_noise)):
        if not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    dt = torch.promote_types(log_model_data.dtype, log_model_noise.dtype)
    if dt in (torch.float16, torch.bfloat16):
        dt = torch.float32
    f_x, f_y = log_model_data.to(dt), log_model_noise.to(dt)
    q_x, q_y = log_noise_data.to(dt), log_noise_noise.to(dt)
    if log_model_noise.dim() == 2:  # K noise samples per data point
        K = log_model_noise.shape[1]
        if K == 0:
            raise ValueError("log_model_noise needs at least one noise sample per data point")
        log_nu = math.log(K)
        rows = F.softplus(-(f_x - log_nu - q_x)) + F.softplus(f_y - log_nu - q_y).sum(1)
        return reduce(rows, reduction, group=group)
    # a shared noise batch: nu = M / N over the global batch
    if reduction == "none":
        raise ValueError(
            "reduction='none' needs per-data-point noise: log_model_noise of shape (N, K), "
            f"got a shared noise batch of shape {tuple(log_model_noise.shape)}"
        )
    n_data = global_rows(N, group=group)
    n_noise = global_rows(log_model_noise.shape[0], group=group)
    if n_data == 0 or n_noise == 0:
        return reduce(f_x[:0], reduction, group=group)
    log_nu = math.log(n_noise / n_data)
    terms = torch.cat([F.softplus(-(f_x - log_nu - q_x)), F.softplus(f_y - log_nu - q_y)])
    return reduce(terms, reduction, count=N, group=group)


class NCE(Objective, functional=nce):
    """Noise-contrastive estimation: fit an unnormalised log-density ``f`` (the normaliser is
    learned as part of it) by logistic classification of data samples against samples of a
    known noise distribution ``q``.

    The classifier's logit is ``G = f - log(nu q)``; at the optimum ``f`` equals the data
    log-density (self-normalised). Give the model's and the noise's log-densities on the data
    batch and on the noise batch. Noise may be per data point (``(N, K)``: ``nu = K``) or one
    shared batch (``(M,)``: ``nu = M / N``). There is no pairwise term (each sample is scored by
    its own log-densities), so it is O(N + M) without the engine; the contrast of a positive
    against shared candidates with a bias is SigLIP's elementwise term, and the ranking form
    (a softmax over the candidates) is InfoNCE. Exact under a process group (the mean over the
    global data points; ``nu`` from the global counts).

    Formula::

        G(x) = f(x) - log(nu * q(x))
        loss = -(1/N) [ sum_data log sigmoid(G(x)) + sum_noise log sigmoid(-G(y)) ]
             =  (1/N) [ sum_data softplus(-G(x)) + sum_noise softplus(G(y)) ]

    Args:
        reduction (str, default "mean"): ``"mean"`` (over data points) | ``"sum"`` |
            ``"none"`` (one per data point, its K noise samples included; needs ``(N, K)``
            noise).

    Inputs:
        - ``log_model_data``: (N,) float, ``f`` on the data samples.
        - ``log_model_noise``: (N, K) or (M,) float, ``f`` on the noise samples.
        - ``log_noise_data``: (N,) float, ``log q`` on the data samples.
        - ``log_noise_noise``: float, shape of ``log_model_noise``, ``log q`` on the noise.
        - returns a scalar, or (N,) with ``reduction="none"``.

    Example::

        import torch
        import contrastkit as ck

        mu, log_z = torch.zeros((), requires_grad=True), torch.zeros((), requires_grad=True)
        x, y = torch.randn(64) + 1.0, 3 * torch.randn(64, 4)  # data, noise N(0, 9)
        f = lambda v: -0.5 * (v - mu) ** 2 - log_z  # unnormalised Gaussian log-density
        log_q = lambda v: -0.5 * (v / 3) ** 2 - torch.log(torch.tensor(3.0 * (2 * torch.pi) ** 0.5))
        loss = ck.NCE()(f(x), f(y), log_q(x), log_q(y))
        loss.backward()

    See also:
        :class:`InfoNCE` (ranking NCE: a softmax over one positive and its noise candidates),
        :class:`SigLIP` (pairwise binary classification with a learned bias).

    References:
        Gutmann, Hyvarinen, "Noise-contrastive estimation: A new estimation principle for
        unnormalized statistical models", AISTATS 2010 (and JMLR 13, 2012). Binary and ranking
        NCE of conditional models: Ma, Collins, "Noise Contrastive Estimation and Negative
        Sampling for Conditional Models", EMNLP 2018, arXiv:1809.01812.
    """


def _check_log_u(log_u, ref: Tensor) -> None:
    if not isinstance(log_u, Tensor) or log_u.dim() != 0 or not log_u.is_floating_point():
        shape = tuple(log_u.shape) if isinstance(log_u, Tensor) else type(log_u).__name__
        raise ValueError(f"log_u must be a 0-dim floating tensor (the state), got {shape}")
    if bool(torch.isnan(log_u)) or bool(log_u == float("inf")):
        raise ValueError(f"log_u must be finite or -inf (fresh state), got {float(log_u)}")
    if log_u.device != ref.device:
        raise ValueError(f"log_u is on {log_u.device} but log_model_data on {ref.device}")


@rank_local_objective
def compositional_nll(
    log_model_data: Tensor,
    log_model_noise: Tensor,
    log_noise_noise: Tensor,
    log_u: Tensor,
    *,
    gamma: float = 0.9,
    update: bool = True,
    reduction: str = "mean",
) -> Tensor:
    """Negative log-likelihood of an unnormalised model with a moving-average log-partition
    state ``log_u`` (0-dim, ``-inf`` when fresh), updated in place when ``update``; see
    :class:`CompositionalNLL`."""
    check_tensor("log_model_data", log_model_data, ndim=1)
    check_tensor("log_model_noise", log_model_noise, ndim=1, ref=log_model_data)
    check_tensor(
        "log_noise_noise", log_noise_noise, shape=tuple(log_model_noise.shape), ref=log_model_data
    )
    _check_log_u(log_u, log_model_data)
    check_range("gamma", float(gamma), 0.0, 1.0, lo_open=True, hi_open=False)
    check_reduction(reduction)
    dt = torch.promote_types(log_model_data.dtype, log_model_noise.dtype)
    if dt in (torch.float16, torch.bfloat16):
        dt = torch.float32
    f_x, f_y = log_model_data.to(dt), log_model_noise.to(dt)
    a = f_y - log_noise_noise.to(dt)  # log of the importance weights exp(f(y)) / q(y)
    log_mean = torch.logsumexp(a.detach(), 0) - math.log(a.shape[0])
    old = log_u.detach().to(dt)
    if gamma == 1.0 or bool(torch.isneginf(old)):  # fresh state: the batch estimate itself
        log_ubar = log_mean
    else:
        log_ubar = torch.logaddexp(old + math.log1p(-gamma), log_mean + math.log(gamma))
    # value: the NLL estimate; gradient: -grad f(x) + (1/u) mean_noise w grad f(y) (w detached)
    s = torch.exp(a - log_ubar).mean()
    rows = -f_x + log_ubar + (s - s.detach())
    if update:
        with torch.no_grad():
            log_u.copy_(log_ubar.to(log_u.dtype))
    return reduce(rows, reduction, group=None)


class CompositionalNLL(torch.nn.Module):
    """Maximum likelihood of an unnormalised model with the log-partition estimated by
    importance sampling under a noise distribution, smoothed across steps by a moving average
    (a compositional stochastic estimator: one global state ``u``, the SogCLR recipe with a
    single normaliser).

    The NLL ``-E f(x) + log Z`` with ``Z = E_{y~q}[exp(f(y)) / q(y)]`` is a compositional
    objective (a log of an expectation): a mini-batch estimate of ``log Z`` is biased and noisy at
    small batches. The module keeps ``u``, a moving average of the batch estimates of ``Z``, and
    uses it in the gradient, whose bias then vanishes as ``u`` tracks ``Z``. ``gamma = 1`` is
    the plain mini-batch importance-sampling NLL. The state is updated in training mode only
    (``.eval()`` freezes it) and kept in log space (``log_u``, a buffer, ``-inf`` until the first
    batch, which sets it). Not a pairwise objective, no engine (O(N + M)). Rank-local: the state
    is per rank; under a process group it raises unless called inside
    ``contrastkit.distributed.local()``.

    Formula::

        w_j   = exp(f(y_j) - log q(y_j))                 (noise samples y_j ~ q, detached)
        u    <- (1 - gamma) u + gamma mean_j w_j          (first batch: u = mean_j w_j)
        loss  = -mean_i f(x_i) + log u                    (the NLL estimate)
        grad  = -mean_i grad f(x_i) + (1 / u) mean_j w_j grad f(y_j)

    Args:
        gamma (float, default 0.9): moving-average factor in (0, 1]; the value the seed paper
            uses was not available, 0.9 is SogCLR's default.
        reduction (str, default "mean"): ``"mean"`` | ``"sum"`` | ``"none"`` (per data point
            ``-f(x_i) + log u``, the noise term's gradient shared equally).

    Inputs:
        - ``log_model_data``: (N,) float, ``f`` on the data samples.
        - ``log_model_noise``: (M,) float, ``f`` on samples of the noise distribution.
        - ``log_noise_noise``: (M,) float, ``log q`` on those noise samples.
        - returns a scalar, or (N,) with ``reduction="none"``.

    Example::

        import torch
        import contrastkit as ck

        mu = torch.zeros((), requires_grad=True)
        f = lambda v: -0.5 * (v - mu) ** 2  # unnormalised: the partition is estimated
        x, y = torch.randn(64) + 1.0, 3 * torch.randn(256)
        log_q = -0.5 * (y / 3) ** 2 - torch.log(torch.tensor(3.0 * (2 * torch.pi) ** 0.5))
        loss_fn = ck.CompositionalNLL(gamma=0.9)
        loss = loss_fn(f(x), f(y), log_q)
        loss.backward()

    See also:
        :class:`NCE` (logistic discrimination from the noise instead of the likelihood),
        :class:`SogCLR` (the same moving-average estimator, one state per sample).

    References:
        Jiang, Qin, Wu, Chen, Yang, Zhang, "Learning Unnormalized Statistical Models via
        Compositional Optimization" (MECO), ICML 2023, arXiv:2306.07485. The moving-average
        estimator: Yuan et al., "Provable Stochastic Optimization for Global Contrastive
        Learning", ICML 2022, arXiv:2202.12387.
    """

    log_u: Tensor

    def __init__(self, gamma: float = 0.9, reduction: str = "mean"):
        super().__init__()
        check_range("gamma", float(gamma), 0.0, 1.0, lo_open=True, hi_open=False)
        check_reduction(reduction)
        self.gamma, self.reduction = float(gamma), reduction
        self.register_buffer("log_u", torch.tensor(float("-inf"), dtype=torch.float64))

    def forward(
        self, log_model_data: Tensor, log_model_noise: Tensor, log_noise_noise: Tensor, **kw
    ) -> Tensor:
        """:func:`compositional_nll` with this module's state (updated in training mode)."""
        opts = {"gamma": self.gamma, "update": self.training, "reduction": self.reduction}
        opts.update(kw)
        if isinstance(log_model_data, Tensor) and self.log_u.device != log_model_data.device:
            self.log_u = self.log_u.to(log_model_data.device)
        return compositional_nll(
            log_model_data, log_model_noise, log_noise_noise, self.log_u, **opts
        )

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, reduction={self.reduction!r}, log_u={float(self.log_u):.4g}"
