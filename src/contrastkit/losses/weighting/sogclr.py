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
repeated index in a batch: the last write wins.

Under a process group (exact): each rank passes its rows and their indices and holds the whole
state; its anchors are contrasted with every rank's rows (``2B - 2`` negatives of the global
batch), and the new values of every rank's rows are all-gathered with their indices and written
(in rank-major order, as one process on the concatenated batch would) into every rank's state.
The bimodal (image-text) losses are in
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
from ...objective import (
    engine_args,
    exact_objective,
    gather_rows,
    objective_group,
    row_weight,
    run,
    sum_across_ranks,
    two_views,
)

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


def _gcl(z1, z2, index, u, tau_b, gamma, gamma_unseen, eps, reduction, eng, group):
    """Shared core. ``tau_b``: float, or the per-sample state (n_samples,) read at ``index``.
    Returns (loss, log ubar, cE, tau) per stacked row of this rank (2B,), detached, ``cE =
    (1/(2B-2)) sum omega s`` (``B`` the global batch), and the global batch's indices."""
    check_reduction(reduction)
    Z, partner = two_views(z1, z2, True, min_rows=2)
    B = z1.shape[0]
    _check_state("u", u, None, z1)
    _check_index(index, B, u.shape[0], z1)
    check_range("gamma", float(gamma), 0.0, 1.0, lo_open=False, hi_open=False)
    if gamma_unseen is not None:
        check_range("gamma_unseen", float(gamma_unseen), 0.0, 1.0, hi_open=False)
    check_positive("eps", eps)
    if isinstance(tau_b, Tensor):
        tau_b = tau_b.detach()[index]
    # the first collective: every rank's dataset indices (the global count, the unseen-batch
    # test and the state exchange); the identity without a group
    index_all = _gather_index(index, u.shape[0], group)
    if gamma_unseen is not None and float(u.detach()[index_all].sum()) == 0.0:
        gamma = gamma_unseen  # LibAUC's first-epoch rule, on the global batch
    n_neg = 2 * index_all.shape[0] - 2
    dt = Z.dtype
    if isinstance(tau_b, Tensor):
        tau_rows = tau_b.detach().to(dt).repeat(2)
    else:
        tau_rows = torch.full((2 * B,), float(tau_b), dtype=dt, device=Z.device)
    pos = (Z[:B] * Z[B:]).sum(-1)
    pos = torch.cat([pos, pos])
    u_old = u.detach()[index].to(dt).repeat(2)
    w = row_weight(reduction, index_all.shape[0], group=None)  # the global count, gathered
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
    # Under a group the rows are this rank's anchors against every rank's candidates, and the
    # gradient reaching this rank's rows carries the group's scale (world size for "ddp").
    grad_mode = torch.is_grad_enabled()
    kap = (1.0 / tau_rows).requires_grad_(True)
    with torch.enable_grad():
        out = run(Z, Z, spec, kap, reduction, eng, group=group)
        (dk,) = torch.autograd.grad(out.sum(), kap, retain_graph=True)
    scale = 1.0 if group is None else group.scale
    ce = (dk / (w * tau_rows * scale)).detach()
    if reduction == "none":
        out = out + w * ce
        out = out[:B] + out[B:]
    else:
        out = out + sum_across_ranks((w * ce).sum(), "first_moment", group=group)
    if not (grad_mode and (z1.requires_grad or z2.requires_grad)):
        out = out.detach()  # the kappa leaf is ours: no graph unless the inputs have one
    return out, log_ubar_out, ce, tau_rows, index_all


def _gather_index(index: Tensor, n_samples: int, group) -> Tensor:
    """Every rank's dataset indices, rank-major (``index`` itself locally). Each rank appends
    its state size, so that a rank whose state has another size makes every rank raise the same
    ``ValueError`` (instead of one rank failing to index while the others wait)."""
    if group is None:
        return index
    mine = torch.cat([index.to(torch.int64), index.new_tensor([n_samples], dtype=torch.int64)])
    every = gather_rows(mine, "index", group=group).view(-1, index.shape[0] + 1)
    sizes = every[:, -1].tolist()
    if len(set(sizes)) > 1:
        detail = ", ".join(f"rank {r}: {n}" for r, n in enumerate(sizes))
        raise ValueError(
            "every rank must hold the whole per-sample state (the same n_samples on every rank "
            f"of the process group); got {detail}"
        )
    return every[:, :-1].reshape(-1)


def _share_rows(vals: Tensor, group) -> Tensor:
    """Every rank's per-row state values (B, k), rank-major like the gathered indices, so that
    every rank writes the same entries as one process on the global batch (identity locally)."""
    return gather_rows(vals.detach().contiguous(), "state_rows", group=group)


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


def _state_value(log_ubar: Tensor, dtype: torch.dtype) -> Tensor:
    """The state's new ``u``: the mean of the two views' ``ubar`` (stacked, 2B) from their logs,
    saturating at the largest finite value of ``dtype`` instead of overflowing to Inf."""
    B = log_ubar.shape[0] // 2
    log_mean = torch.logaddexp(log_ubar[:B], log_ubar[B:]) - math.log(2)
    return log_mean.exp().clamp(max=torch.finfo(dtype).max).to(dtype)


@exact_objective
def sogclr(
    z1: Tensor,
    z2: Tensor,
    index: Tensor,
    u: Tensor,
    *,
    temperature: float = 0.1,
    gamma: float = 0.9,
    gamma_unseen: Optional[float] = None,
    eps: float = 1e-8,
    update: bool = True,
    reduction: str = "mean",
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """SogCLR loss of two views (B, d), B >= 2, with dataset ``index`` (B,) into the state ``u``
    (n_samples,), which is updated in place when ``update`` (as ``F.batch_norm`` does with its
    running statistics). ``gamma`` is used as given, or ``gamma_unseen`` when that is given and
    every index of the batch is unseen (``u[index]`` all zero; the modules pass 1 in the first
    epoch, LibAUC's rule).

    Under a process group (exact): every rank passes its own rows ``z1, z2, index`` and the
    *whole* state ``u``, identical on every rank; its anchors are contrasted with every rank's
    samples, the loss is that of one process on the concatenated batch, and the unseen test is
    on the global batch. With ``update`` the new ``u`` of every rank's rows is exchanged
    (all-gather of the indices and one value per row), so every rank's ``u`` afterwards equals
    the single-process buffer. ``reduction="none"`` returns this rank's rows."""
    eng = engine_args(chunk_size, backend)
    check_temperature("temperature", temperature)
    group = objective_group()
    loss, log_ubar, _, _, index_all = _gcl(
        z1, z2, index, u, temperature, gamma, gamma_unseen, eps, reduction, eng, group
    )
    if update:
        with torch.no_grad():  # the mean of the two views' ubar, from their logs
            u[index_all] = _share_rows(_state_value(log_ubar, u.dtype), group)
    return loss


@exact_objective
def isogclr(
    z1: Tensor,
    z2: Tensor,
    index: Tensor,
    u: Tensor,
    tau: Tensor,
    grad_tau: Tensor,
    *,
    gamma: float = 0.9,
    gamma_unseen: Optional[float] = None,
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
    states ``u``, ``grad_tau`` and ``tau`` (all (n_samples,)) are updated in place.

    Under a process group as :func:`sogclr`: every rank passes the whole states (identical on
    every rank) and its own rows; the new ``u`` and the temperature gradient of every rank's
    rows are exchanged (two values per row) and every rank applies the same momentum and
    temperature step to the global batch's entries, so the three states stay equal to the
    single-process ones on every rank."""
    eng = engine_args(chunk_size, backend)
    check_embeddings("z1", z1)
    _check_state("u", u, None, z1)
    _check_state("tau", tau, u.shape[0], z1)
    _check_state("grad_tau", grad_tau, u.shape[0], z1)
    _check_isog(rho, eta, beta, min_temperature, max_temperature)
    if not bool((tau > 0).all()):
        raise ValueError("tau (the per-sample temperatures) must be > 0")
    group = objective_group()
    loss, log_ubar, ce, tau_rows, index_all = _gcl(
        z1, z2, index, u, tau, gamma, gamma_unseen, eps, reduction, eng, group
    )
    if update:
        B = z1.shape[0]
        with torch.no_grad():
            g_rows = log_ubar + rho - ce / tau_rows
            g = (g_rows[:B] + g_rows[B:]) / 2
            u_new = _state_value(log_ubar, u.dtype)
            dt = torch.promote_types(g.dtype, u.dtype)  # exact for both values
            vals = _share_rows(torch.stack([u_new.to(dt), g.to(dt)], 1), group)
            u[index_all] = vals[:, 0].to(u.dtype)
            g = vals[:, 1].to(g.dtype)
            grad_tau[index_all] = (
                (1.0 - beta) * grad_tau[index_all] + beta * g.to(grad_tau.dtype)
            ).to(grad_tau.dtype)
            tau[index_all] = (tau[index_all] - eta * grad_tau[index_all]).clamp(
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

    def gamma_args(self) -> tuple[float, Optional[float]]:
        """``(gamma, gamma_unseen)`` for the functional: in the first epoch of the constant
        schedule ``(gamma, 1.0)`` (the objective uses 1 on a batch of unseen indices, tested on
        the global batch under a process group), else ``(the scheduled gamma, None)``."""
        g = float(self.gamma_current)
        if self.gamma_schedule == "constant" and g > self.gamma:
            return self.gamma, 1.0
        return g, None

    def effective_gamma(self, index: Tensor, state: str = "u") -> float:
        """LibAUC's rule: gamma = 1 in the first epoch while the batch's indices are all unseen
        (``state[index].sum() == 0``), on this process's ``index`` only (the objectives apply
        it to the global batch themselves, see :meth:`gamma_args`)."""
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

    The state is updated in training mode only (``.eval()`` freezes it).

    Under a process group (``torch.distributed``) the loss and gradients are those of one
    process on the concatenated batch: each rank's anchors see every rank's samples as
    negatives, and the first-epoch rule tests the global batch. Every rank keeps the whole
    buffer ``u``; after each step the new ``u`` of every rank's rows is all-gathered with the
    indices (12 bytes a row in fp32), so the buffer is identical on every rank and equal to the
    single-process one (LibAUC does the same for ``u``; see docs/objectives/weighting.md).

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
        gamma, gamma_unseen = self.gamma_args()
        return sogclr(
            z1,
            z2,
            index,
            self.u,
            temperature=self.temperature,
            gamma=gamma,
            gamma_unseen=gamma_unseen,
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

    Under a process group as :class:`SogCLR`: the exchange carries the new ``u`` and the
    temperature gradient of every rank's rows, and every rank applies the same momentum and
    temperature step to the global batch's entries, so ``u``, ``grad_tau`` and ``tau`` are
    identical on every rank and equal to one process's (LibAUC keeps ``tau`` and ``grad_tau``
    per rank: a sample that moves to another rank finds a stale temperature there).

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
        gamma, gamma_unseen = self.gamma_args()
        return isogclr(
            z1,
            z2,
            index,
            self.u,
            self.tau,
            self.grad_tau,
            gamma=gamma,
            gamma_unseen=gamma_unseen,
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
