"""SogCLR and iSogCLR: global contrastive losses with per-sample moving-average normalisers.

SogCLR ("Provable Stochastic Optimization for Global Contrastive Learning: Small Batch Does Not
Harm Performance", Yuan et al., ICML 2022, arXiv 2202.12387) and iSogCLR ("Not All Semantics are
Created Equal: Contrastive Self-supervised Learning with Automatic Temperature
Individualization", Qiu et al., ICML 2023, arXiv 2305.11965), as LibAUC's ``GCLoss_v1``
(unimodal) computes them. Views ``h1, h2`` (B, d) are L2-normalised; anchor ``i`` of view 1 has
candidates ``[h2; h1]``: the positive ``h2_i``, itself excluded, the other ``2B - 2`` negatives
``S_i^-`` (symmetrically for view 2). With ``s`` raw cosines and ``E_ij = exp(s_ij / tau_i)``::

    ubar_i = (1 - gamma) u[index_i] + gamma mean_{j in S_i^-} E_ij      (both views use old u)
    l_i    = -s_i,pos + (1 / (2B - 2)) sum_{j in S_i^-} omega_ij s_ij,  omega = E / max(ubar, eps)
    loss   = mean_i (l_i^(1) + l_i^(2))           (omega detached: a surrogate whose gradient is
                                                    tau x that of the global contrastive loss)
    state  u[index_i] <- (ubar_i^(1) + ubar_i^(2)) / 2                   (no gradient)

The positive is not in the normaliser; identical embeddings on fresh state give exactly 0.
``ubar`` and ``omega`` are computed in log space (``mean E`` is ``exp(lse - log(2B - 2))``):
at small temperatures ``E_ij = exp(s_ij / tau)`` overflows fp32 (tau = 0.01 and a negative of
cosine 0.9), so the state ``u`` saturates at the largest finite value of its dtype while the
loss and its gradient stay finite.
iSogCLR replaces ``tau`` with a per-sample temperature ``tau[index_i]`` (state, init
``temperature``) and after the loss takes one momentum step on it (LibAUC, no autograd)::

    grad_i = mean over views of [log ubar_i + rho - (1/(2B - 2)) sum_{S^-} omega_ij s_ij / tau_i]
    g[index_i] <- (1 - beta) g[index_i] + beta grad_i
    tau[index_i] <- clamp(tau_i - eta g[index_i], min_temperature, max_temperature)

Engine form: rows are the ``2B`` stacked views (view-major); one plain log-sum-exp over the
negatives (the fast in-place path); per-row temperatures are per-row ``kappa``. The first moment
``sum_j pi_ij s_ij`` that the value needs is the engine's ``d loss / d kappa_i``, which the
single sweep computes with the gradients anyway. Gamma as LibAUC: ``'constant'`` uses
``gamma = 1`` while the epoch counter says "first epoch" and every index of the batch is
unseen (``u[index].sum() == 0``, a batch-level test), else ``gamma``; ``'cosine'`` decays from
1 to ``gamma`` over ``gamma_decay_epochs`` (call :meth:`SogCLR.adjust_gamma` each epoch). A
repeated index in a batch: the last write wins. The bimodal (image-text) losses are in
:mod:`contrastkit.losses.weighting.sogclr_bimodal`.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from ..._validation import (
    check_embeddings,
    check_positive,
    check_range,
    check_reduction,
    check_temperature,
)
from ...engine import LSETerm, PairMask, RowSpec
from ...objective import engine_args, rank_local_objective, row_weight, run, two_views

__all__ = ["sogclr", "isogclr", "SogCLR", "iSogCLR"]

GAMMA_SCHEDULES = ("constant", "cosine")


def _check_state(name: str, t, n: Optional[int], ref: Tensor) -> None:
    if not isinstance(t, Tensor) or t.dim() != 1 or not t.is_floating_point():
        shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"{name} must be a 1-D floating tensor (n_samples,), got {shape}")
    if n is not None and t.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},), got {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} must hold one entry per dataset sample, got shape (0,)")
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but the embeddings on {ref.device}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains {int((~torch.isfinite(t)).sum())} NaN or Inf values")


def _check_index(index, B: int, n_samples: int, ref: Tensor) -> None:
    if not isinstance(index, Tensor):
        raise ValueError(f"index must be a torch.Tensor, got {type(index).__name__}")
    if index.dim() != 1 or index.shape[0] != B:
        raise ValueError(f"index must have shape ({B},) (one per sample), got {tuple(index.shape)}")
    if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
        raise ValueError(f"index must hold integer dataset indices, got dtype {index.dtype}")
    if index.device != ref.device:
        raise ValueError(f"index is on {index.device} but the embeddings on {ref.device}")
    if B and (int(index.min()) < 0 or int(index.max()) >= n_samples):
        raise ValueError(
            f"index values must be in [0, n_samples={n_samples}), "
            f"got min {int(index.min())}, max {int(index.max())}"
        )


def _gcl(z1, z2, index, u, tau_b, gamma, eps, reduction, eng):
    """Shared core. ``tau_b``: float, or the per-sample state (n_samples,) read at ``index``.
    Returns (loss, log ubar, cE, tau) per stacked row (2B,), detached, ``cE = (1/(2B-2)) sum
    omega s``."""
    check_reduction(reduction)
    Z, partner = two_views(z1, z2, True, min_rows=2)
    B = z1.shape[0]
    _check_state("u", u, None, z1)
    _check_index(index, B, u.shape[0], z1)
    check_range("gamma", float(gamma), 0.0, 1.0, lo_open=False, hi_open=False)
    check_positive("eps", eps)
    if isinstance(tau_b, Tensor):
        tau_b = tau_b.detach()[index]
    n_neg = 2 * B - 2
    dt = Z.dtype
    if isinstance(tau_b, Tensor):
        tau_rows = tau_b.detach().to(dt).repeat(2)
    else:
        tau_rows = torch.full((2 * B,), float(tau_b), dtype=dt, device=Z.device)
    pos = (Z[:B] * Z[B:]).sum(-1)
    pos = torch.cat([pos, pos])
    u_old = u.detach()[index].to(dt).repeat(2)
    w = row_weight(reduction, B, group=None)
    log_ubar_out = torch.empty(2 * B, dtype=dt, device=Z.device)
    log_n = math.log(n_neg)
    log_eps = math.log(eps)

    def row_fn(st, sd):
        lse0 = st.lse[0]
        # log space: mean = exp(lse0 - log n) overflows fp32 at small temperatures
        log_mean = lse0.detach() - log_n
        log_ubar = torch.logaddexp(sd["log_u_old"], log_mean + _log(gamma)).detach()
        log_ubar_out[sd["rowid"]] = log_ubar
        c = torch.exp(log_mean - log_ubar.clamp(min=log_eps))  # mean / max(ubar, eps)
        # value 0, gradient c tau d lse0 = omega / (2B - 2) on the negatives
        return w * (c * sd["tau"] * (lse0 - lse0.detach()) - sd["pos"])

    spec = RowSpec(
        terms=(LSETerm(exclude=PairMask(self_offset=0, index=partner)),),
        row_fn=row_fn,
        row_side={
            "pos": pos,
            "log_u_old": torch.log((1.0 - gamma) * u_old),  # -inf for fresh state
            "tau": tau_rows,
            "rowid": torch.arange(2 * B, device=Z.device),
        },
    )
    # The value needs cE_i = c_i sum_j pi_ij s_ij, a first moment of the row softmax. With
    # kappa = 1/tau as a leaf, d out / d kappa_i = w c_i tau_i sum_j pi_ij s_ij exactly, and the
    # engine returns it with the gradients it computes anyway (single sweep: at no extra cost).
    grad_mode = torch.is_grad_enabled()
    kap = (1.0 / tau_rows).requires_grad_(True)
    with torch.enable_grad():
        out = run(Z, Z, spec, kap, reduction, eng, group=None)
        (dk,) = torch.autograd.grad(out.sum(), kap, retain_graph=True)
    ce = (dk / (w * tau_rows)).detach()
    out = out + (w * ce if reduction == "none" else (w * ce).sum())
    if reduction == "none":
        out = out[:B] + out[B:]
    if not (grad_mode and (z1.requires_grad or z2.requires_grad)):
        out = out.detach()  # the kappa leaf is ours: no graph unless the inputs have one
    return out, log_ubar_out, ce, tau_rows


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


def _state_value(log_ubar: Tensor, dtype: torch.dtype) -> Tensor:
    """The state's new ``u``: the mean of the two views' ``ubar`` (stacked, 2B) from their logs,
    saturating at the largest finite value of ``dtype`` instead of overflowing to Inf."""
    B = log_ubar.shape[0] // 2
    log_mean = torch.logaddexp(log_ubar[:B], log_ubar[B:]) - math.log(2)
    return log_mean.exp().clamp(max=torch.finfo(dtype).max).to(dtype)


@rank_local_objective
def sogclr(
    z1: Tensor,
    z2: Tensor,
    index: Tensor,
    u: Tensor,
    *,
    temperature: float = 0.1,
    gamma: float = 0.9,
    eps: float = 1e-8,
    update: bool = True,
    reduction: str = "mean",
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """SogCLR loss of two views (B, d), B >= 2, with dataset ``index`` (B,) into the state ``u``
    (n_samples,), which is updated in place when ``update`` (as ``F.batch_norm`` does with its
    running statistics). ``gamma`` is used as given (the module applies the schedule)."""
    eng = engine_args(chunk_size, backend)
    check_temperature("temperature", temperature)
    loss, log_ubar, _, _ = _gcl(z1, z2, index, u, temperature, gamma, eps, reduction, eng)
    if update:
        with torch.no_grad():  # the mean of the two views' ubar, from their logs
            u[index] = _state_value(log_ubar, u.dtype)
    return loss


@rank_local_objective
def isogclr(
    z1: Tensor,
    z2: Tensor,
    index: Tensor,
    u: Tensor,
    tau: Tensor,
    grad_tau: Tensor,
    *,
    gamma: float = 0.9,
    rho: float = 0.3,
    eta: float = 0.01,
    beta: float = 0.9,
    min_temperature: float = 0.05,
    max_temperature: float = 0.7,
    eps: float = 1e-8,
    update: bool = True,
    reduction: str = "mean",
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """iSogCLR loss: SogCLR with per-sample temperatures ``tau[index]``; when ``update``, the
    states ``u``, ``grad_tau`` and ``tau`` (all (n_samples,)) are updated in place."""
    eng = engine_args(chunk_size, backend)
    check_embeddings("z1", z1)
    _check_state("u", u, None, z1)
    _check_state("tau", tau, u.shape[0], z1)
    _check_state("grad_tau", grad_tau, u.shape[0], z1)
    _check_isog(rho, eta, beta, min_temperature, max_temperature)
    if not bool((tau > 0).all()):
        raise ValueError("tau (the per-sample temperatures) must be > 0")
    loss, log_ubar, ce, tau_rows = _gcl(z1, z2, index, u, tau, gamma, eps, reduction, eng)
    if update:
        B = z1.shape[0]
        with torch.no_grad():
            g_rows = log_ubar + rho - ce / tau_rows
            g = (g_rows[:B] + g_rows[B:]) / 2
            u[index] = _state_value(log_ubar, u.dtype)
            grad_tau[index] = ((1.0 - beta) * grad_tau[index] + beta * g.to(grad_tau.dtype)).to(
                grad_tau.dtype
            )
            tau[index] = (tau[index] - eta * grad_tau[index]).clamp(
                min=min_temperature, max=max_temperature
            )
    return loss


def _check_isog(rho, eta, beta, min_temperature, max_temperature) -> None:
    for name, v in (("rho", rho), ("eta", eta)):
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    check_range("beta", float(beta), 0.0, 1.0, hi_open=False)
    check_positive("min_temperature", min_temperature)
    check_positive("max_temperature", max_temperature)
    if min_temperature > max_temperature:
        raise ValueError(
            f"min_temperature must be <= max_temperature, "
            f"got min_temperature={min_temperature}, max_temperature={max_temperature}"
        )


class _GammaSchedule(torch.nn.Module):
    """LibAUC's gamma schedule; ``gamma_current`` (a buffer, checkpointed) starts at 1."""

    gamma_current: Tensor  # buffer, registered in _init_schedule

    def _init_schedule(
        self, n_samples, gamma, gamma_schedule, gamma_decay_epochs, eps, states=("u",)
    ):
        if not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        check_range("gamma", float(gamma), 0.0, 1.0, lo_open=True, hi_open=False)
        if gamma_schedule not in GAMMA_SCHEDULES:
            raise ValueError(
                f"gamma_schedule must be one of {GAMMA_SCHEDULES}, got {gamma_schedule!r}"
            )
        if gamma_schedule == "cosine" and (
            not isinstance(gamma_decay_epochs, int) or gamma_decay_epochs < 1
        ):
            raise ValueError(
                "gamma_decay_epochs must be a positive integer with gamma_schedule='cosine', "
                f"got {gamma_decay_epochs!r}"
            )
        check_positive("eps", eps)
        self.n_samples = n_samples
        self.gamma = float(gamma)
        self.gamma_schedule = gamma_schedule
        self.gamma_decay_epochs = gamma_decay_epochs
        self.eps = eps
        for name in states:
            self.register_buffer(name, torch.zeros(n_samples))
        self.register_buffer("gamma_current", torch.tensor(1.0, dtype=torch.float64))

    def adjust_gamma(self, epoch: int) -> float:
        """Set gamma for ``epoch`` (0-based) by the schedule; call once per epoch."""
        if self.gamma_schedule == "constant":
            g = 1.0 if epoch == 0 else self.gamma
        elif epoch < self.gamma_decay_epochs:
            cos = math.cos(math.pi * epoch / self.gamma_decay_epochs)
            g = (1.0 - self.gamma) * 0.5 * (1.0 + cos) + self.gamma
        else:
            g = self.gamma
        self.gamma_current.fill_(g)
        return g

    def effective_gamma(self, index: Tensor, state: str = "u") -> float:
        """LibAUC's rule: gamma = 1 in the first epoch while the batch's indices are all unseen
        (``state[index].sum() == 0``)."""
        g = float(self.gamma_current)
        if self.gamma_schedule == "constant" and g > self.gamma:
            return 1.0 if float(getattr(self, state)[index].sum()) == 0.0 else self.gamma
        return g


class SogCLR(_GammaSchedule):
    """SogCLR: the global contrastive loss optimised with small batches. Each sample keeps a
    moving average ``u`` of its InfoNCE normaliser over the whole dataset (a buffer indexed by
    the dataset index), so the gradient estimates that of the loss against every sample of the
    dataset, not only the batch (Yuan et al.; LibAUC ``GCLoss_v1``).

    Anchor ``i`` of each view has the other view of its sample as positive and the other
    ``2B - 2`` rows as negatives ``S_i^-``; with cosines ``s`` and ``E_ij = exp(s_ij / tau)``::

        ubar_i = (1 - gamma) u[index_i] + gamma mean_{j in S_i^-} E_ij
        l_i    = -s_i,pos + (1 / (2B - 2)) sum_{j in S_i^-} (E_ij / ubar_i) s_ij  (E/ubar detached)
        loss   = mean_i (l_i^(1) + l_i^(2)),     u[index_i] <- mean of the two views' ubar_i

    The state is updated in training mode only (``.eval()`` freezes it). Rank-local: the
    state is per rank; under a process group it raises unless called inside
    ``contrastkit.distributed.local()``.

    Args:
        n_samples (int): dataset size; ``index`` values lie in ``[0, n_samples)``.
        temperature (float, default 0.1): tau (LibAUC ``GCLoss_v1``).
        gamma (float, default 0.9): moving-average factor in (0, 1].
        gamma_schedule (str, default "constant"): "constant" (gamma = 1 on a first-epoch batch
            of unseen indices) | "cosine" (1 -> gamma over ``gamma_decay_epochs``); call
            :meth:`adjust_gamma` at every epoch start.
        gamma_decay_epochs (int or None, default None): required with "cosine".
        eps (float, default 1e-8): floor of the normaliser.
        reduction (str, default "mean"): "mean" | "sum" | "none" (per-sample terms (B,)).
        chunk_size (int or None, default None), backend (str, default "auto"): engine options.

    Inputs:
        - ``z1``, ``z2`` (B, d) float, B >= 2: two views; row ``i`` of each is a positive pair.
        - ``index`` (B,) int64: dataset indices of the samples (distinct within a batch).

    Example::

        import torch
        import contrastkit as ck

        loss_fn = ck.SogCLR(n_samples=100, temperature=0.1)
        z1, z2, index = torch.randn(8, 16), torch.randn(8, 16), torch.arange(8)
        loss = loss_fn(z1, z2, index)

    See also:
        :class:`iSogCLR`, :class:`SogCLRBimodal`, :class:`NTXent`.

    References:
        Yuan et al., "Provable Stochastic Optimization for Global Contrastive Learning: Small
        Batch Does Not Harm Performance", ICML 2022, arXiv:2202.12387
        (github.com/Optimization-AI/LibAUC).
    """

    u: Tensor  # buffer, registered in _init_schedule

    def __init__(
        self,
        n_samples: int,
        temperature: float = 0.1,
        gamma: float = 0.9,
        gamma_schedule: str = "constant",
        gamma_decay_epochs: Optional[int] = None,
        eps: float = 1e-8,
        reduction: str = "mean",
        chunk_size: Optional[int] = None,
        backend: str = "auto",
    ):
        super().__init__()
        check_temperature("temperature", temperature)
        check_reduction(reduction)
        engine_args(chunk_size, backend)
        self._init_schedule(n_samples, gamma, gamma_schedule, gamma_decay_epochs, eps)
        self.temperature = temperature
        self.reduction, self.chunk_size, self.backend = reduction, chunk_size, backend

    def forward(self, z1: Tensor, z2: Tensor, index: Tensor) -> Tensor:
        check_embeddings("z1", z1)
        _check_index(index, z1.shape[0], self.n_samples, self.u)
        return sogclr(
            z1,
            z2,
            index,
            self.u,
            temperature=self.temperature,
            gamma=self.effective_gamma(index),
            eps=self.eps,
            update=self.training,
            reduction=self.reduction,
            chunk_size=self.chunk_size,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return (
            f"n_samples={self.n_samples}, temperature={self.temperature}, gamma={self.gamma}, "
            f"gamma_schedule={self.gamma_schedule!r}"
        )


class iSogCLR(_GammaSchedule):  # noqa: N801 (the paper's name)
    """iSogCLR: SogCLR with an individual temperature per sample, learned by a momentum step
    on a distributionally robust objective after every loss (Qiu et al.; LibAUC
    ``GCLoss_v1(enable_isogclr=True)``).

    As :class:`SogCLR` with ``tau`` replaced by the per-sample state ``tau[index_i]``; after
    each training-mode call (no autograd)::

        grad_i = mean over views of [log ubar_i + rho - (1/(2B-2)) sum_{S^-} omega_ij s_ij / tau_i]
        g[index_i]   <- (1 - beta) g[index_i] + beta grad_i
        tau[index_i] <- clamp(tau_i - eta g[index_i], min_temperature, max_temperature)

    Buffers ``u``, ``tau`` (the per-sample temperatures, init ``temperature``) and
    ``grad_tau`` (their momentum), all (n_samples,) (LibAUC's names, kept for checkpoints).
    Rank-local: under a process group it raises unless called inside
    ``contrastkit.distributed.local()``.

    Args:
        n_samples (int): dataset size.
        temperature (float, default 0.1): initial per-sample temperature.
        rho (float, default 0.3): the robustness radius of the temperature objective.
        eta (float, default 0.01): temperature step size.
        beta (float, default 0.9): momentum of the temperature gradient, in (0, 1].
        min_temperature (float, default 0.05), max_temperature (float, default 0.7): the clamp
            of the per-sample temperatures (LibAUC ``tau_min`` / ``tau_max``).
        gamma, gamma_schedule, gamma_decay_epochs, eps: as :class:`SogCLR`.
        reduction (str, default "mean"): "mean" | "sum" | "none" (per-sample terms (B,)).
        chunk_size (int or None, default None), backend (str, default "auto"): engine options.

    (The official README's CIFAR-100 setting: rho 0.4, gamma 0.8, beta 0.5, eta 0.03.)

    Inputs:
        - ``z1``, ``z2`` (B, d) float, B >= 2: two views; row ``i`` of each is a positive pair.
        - ``index`` (B,) int64: dataset indices of the samples (distinct within a batch).

    Example::

        import torch
        import contrastkit as ck

        loss_fn = ck.iSogCLR(n_samples=100, temperature=0.1)
        z1, z2, index = torch.randn(8, 16), torch.randn(8, 16), torch.arange(8)
        loss = loss_fn(z1, z2, index)

    See also:
        :class:`SogCLR`, :class:`iSogCLRBimodal`, :class:`AMCL`.

    References:
        Qiu et al., "Not All Semantics are Created Equal: Contrastive Self-supervised Learning
        with Automatic Temperature Individualization", ICML 2023, arXiv:2305.11965.
    """

    u: Tensor  # buffer, registered in _init_schedule

    def __init__(
        self,
        n_samples: int,
        temperature: float = 0.1,
        rho: float = 0.3,
        eta: float = 0.01,
        beta: float = 0.9,
        min_temperature: float = 0.05,
        max_temperature: float = 0.7,
        gamma: float = 0.9,
        gamma_schedule: str = "constant",
        gamma_decay_epochs: Optional[int] = None,
        eps: float = 1e-8,
        reduction: str = "mean",
        chunk_size: Optional[int] = None,
        backend: str = "auto",
    ):
        super().__init__()
        check_temperature("temperature", temperature)
        _check_isog(rho, eta, beta, min_temperature, max_temperature)
        check_reduction(reduction)
        engine_args(chunk_size, backend)
        self._init_schedule(n_samples, gamma, gamma_schedule, gamma_decay_epochs, eps)
        self.temperature, self.rho, self.eta, self.beta = temperature, rho, eta, beta
        self.min_temperature, self.max_temperature = min_temperature, max_temperature
        self.reduction, self.chunk_size, self.backend = reduction, chunk_size, backend
        self.register_buffer("tau", torch.full((n_samples,), float(temperature)))
        self.register_buffer("grad_tau", torch.zeros(n_samples))

    def forward(self, z1: Tensor, z2: Tensor, index: Tensor) -> Tensor:
        check_embeddings("z1", z1)
        _check_index(index, z1.shape[0], self.n_samples, self.u)
        return isogclr(
            z1,
            z2,
            index,
            self.u,
            self.tau,
            self.grad_tau,
            gamma=self.effective_gamma(index),
            rho=self.rho,
            eta=self.eta,
            beta=self.beta,
            min_temperature=self.min_temperature,
            max_temperature=self.max_temperature,
            eps=self.eps,
            update=self.training,
            reduction=self.reduction,
            chunk_size=self.chunk_size,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return (
            f"n_samples={self.n_samples}, temperature={self.temperature}, rho={self.rho}, "
            f"eta={self.eta}, beta={self.beta}, min_temperature={self.min_temperature}, "
            f"max_temperature={self.max_temperature}"
        )
