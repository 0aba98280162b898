"""Bimodal SogCLR / iSogCLR (image-text), as LibAUC's ``GCLoss_v2``.

Same papers as :mod:`contrastkit.losses.weighting.sogclr`. Image ``i`` against the ``B - 1`` texts
``j != i`` (and symmetrically text against images), logits shifted by the positive::

    l_ij = s_ij - s_ii,    b_i <- max(b_i, max_j l_ij / tau_i)        (running max, state)
    u_i  <- max(eps, (1 - gamma) u_i exp(b_old - b_i) + gamma mean_{j != i} exp(l_ij / tau_i - b_i))
    p_ij = exp(l_ij / tau_i - b_i) / u_i                              (detached)
    img_loss = mean_i sum_{j != i} p_ij l_ij        (no 1/(B-1), unlike the unimodal loss)
    loss = (img_loss + txt_loss) / 2

States per dataset index: ``u_img, b_img`` (image rows) and ``u_txt, b_txt`` (text rows).
iSogCLR (``temperature_scheme='individual_learnable'`` in LibAUC) keeps ``tau_img, tau_txt``
per index and after each step::

    grad_i = log u_i + rho + b_i - (1/(B-1)) sum_{j != i} p_ij l_ij / tau_i
    g_i <- (1 - beta) g_i + beta grad_i
    tau_i <- clamp(tau_i - eta g_i, min_temperature, max_temperature)

Defaults as LibAUC: tau 0.01, gamma 0.9, eps 1e-20; iSogCLR rho 6.0, eta 0.01, beta 0.9,
tau in [0.005, 0.05]. Gamma schedule as the unimodal loss, per direction (``u_img[index]`` /
``u_txt[index]`` decide ``gamma = 1`` on an unseen first-epoch batch). Indices within a batch are
assumed distinct (LibAUC reads the state back after writing it; with repeats the two differ).
Inputs are used as given (LibAUC does not normalise; ``normalize=True`` does).

Under a process group (exact): each rank passes its pairs and their indices and holds the whole
states; its images are contrasted with every rank's texts and its texts with every rank's
images, the running maxima are over every rank's samples (a forward-only all-gather of both
modalities), and the new state values of every rank's pairs are all-gathered with their
indices and written into every rank's states (in rank-major order).

Engine form: two one-directional plain log-sum-exps (images over texts, texts over images; each
direction has its own per-row temperatures), the first moment for the value from the engine's
temperature gradient, and one forward-only blocked pass for the row and column maxima that the
running shift ``b`` needs (memory O(block x B)).
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import Tensor

from ..._validation import (
    check_compatible,
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
    prepare,
    row_weight,
    run,
    sum_across_ranks,
)
from .sogclr import (
    _check_index,
    _check_isog,
    _check_state,
    _GammaSchedule,
    _gather_index,
    _share_rows,
)

__all__ = ["sogclr_bimodal", "isogclr_bimodal", "SogCLRBimodal", "iSogCLRBimodal"]


def _row_max(A: Tensor, C: Tensor, block: Optional[int]) -> Tensor:
    """max_j <a_i, c_j> per row, in row blocks, no gradient (memory O(block x M))."""
    n = A.shape[0]
    b = block or min(n, max(256, (1 << 24) // max(C.shape[0], 1)))
    rows = torch.empty(n, dtype=A.dtype, device=A.device)
    with torch.no_grad():
        Ad, Cd = A.detach(), C.detach()
        for r0 in range(0, n, b):
            rows[r0 : r0 + b] = (Ad[r0 : r0 + b] @ Cd.t()).amax(dim=1)
    return rows


def _row_col_max(A: Tensor, C: Tensor, block: Optional[int]) -> tuple[Tensor, Tensor]:
    """max_j <a_i, c_j> per row and max_i per column, in row blocks, no gradient."""
    n = A.shape[0]
    b = block or min(n, max(256, (1 << 24) // max(C.shape[0], 1)))
    rows = torch.empty(n, dtype=A.dtype, device=A.device)
    cols = torch.full((C.shape[0],), float("-inf"), dtype=A.dtype, device=A.device)
    with torch.no_grad():
        Ad, Cd = A.detach(), C.detach()
        for r0 in range(0, n, b):
            s = Ad[r0 : r0 + b] @ Cd.t()
            rows[r0 : r0 + b] = s.amax(dim=1)
            torch.maximum(cols, s.amax(dim=0), out=cols)
    return rows, cols


def _direction(A, C, pos, smax, u_old, b_old, tau, gamma, eps, w, n, reduction, eng, group):
    """One direction, this rank's rows ``A`` against every rank's ``C`` (``n`` in all). Returns
    (loss, u_new, b_new, total weight C_i, C_i E_i), the last four per row of ``A``."""
    rows = A.shape[0]
    dt = A.dtype
    s_ii = pos.detach()
    b_new = torch.maximum(b_old, (smax - s_ii) / tau)
    u_keep = (1.0 - gamma) * u_old * torch.exp(b_old - b_new)
    u_out = torch.empty(rows, dtype=dt, device=A.device)
    mass_out = torch.empty_like(u_out)

    def row_fn(st, sd):
        lse = st.lse[0]
        # sum_{j != i} exp(l_ij / tau - b) = exp(lse - s_ii / tau - b)
        total = torch.exp(lse.detach() - sd["s_ii"] / sd["tau"] - sd["b"])
        u_new = (sd["u_keep"] + gamma * total / (n - 1)).clamp(min=eps)
        mass = total / u_new  # sum_j p_ij
        u_out[sd["rowid"]] = u_new
        mass_out[sd["rowid"]] = mass
        return w * (mass * sd["tau"] * (lse - lse.detach()) - mass * sd["pos"])

    spec = RowSpec(
        terms=(LSETerm(exclude=PairMask(self_offset=0)),),
        row_fn=row_fn,
        row_side={
            "pos": pos,
            "s_ii": s_ii,
            "tau": tau,
            "b": b_new,
            "u_keep": u_keep,
            "rowid": torch.arange(rows, device=A.device),
        },
    )
    kap = (1.0 / tau).requires_grad_(True)
    with torch.enable_grad():
        out = run(A, C, spec, kap, reduction, eng, group=group)
        (dk,) = torch.autograd.grad(out.sum(), kap, retain_graph=True)
    scale = 1.0 if group is None else group.scale  # the group's gradient convention
    ce = (dk / (w * tau * scale)).detach()  # C_i sum_j pi_ij s_ij
    if reduction == "none":
        out = out + w * ce
    else:
        out = out + sum_across_ranks((w * ce).sum(), "first_moment", group=group)
    return out, u_out, b_new, mass_out, ce


def _bimodal(image, text, index, st, tau_img, tau_txt, gammas, eps, reduction, normalize, eng):
    """Shared core. ``st``: dict of the state tensors (u_img, b_img, u_txt, b_txt); ``tau_*``:
    float or per-sample state; ``gammas``: (image, text, unseen or None). Returns (loss,
    per-direction (u, b, mass, cE, tau, s_ii) tuples of this rank's rows, the global batch's
    indices, the global batch size)."""
    check_reduction(reduction)
    check_embeddings("image", image, min_rows=2)
    check_embeddings("text", text, min_rows=2)
    check_compatible("image", image, "text", text, same_rows=True)
    B = image.shape[0]
    _check_state("u_img", st["u_img"], None, image)
    for name, t in st.items():
        _check_state(name, t, st["u_img"].shape[0], image)
    _check_index(index, B, st["u_img"].shape[0], image)
    for g in gammas[:2]:
        check_range("gamma", float(g), 0.0, 1.0, hi_open=False)
    if gammas[2] is not None:
        check_range("gamma_unseen", float(gammas[2]), 0.0, 1.0, hi_open=False)
    check_positive("eps", eps)
    Im, Tx = prepare(image, normalize), prepare(text, normalize)
    dt = Im.dtype
    group = objective_group()
    # the first collective: every rank's dataset indices (the global count, the unseen-batch
    # test and the state exchange); the identity without a group
    index_all = _gather_index(index, st["u_img"].shape[0], group)
    n = index_all.shape[0]

    def rows(t):
        if isinstance(t, Tensor):
            return t.detach()[index].to(dt)
        return torch.full((B,), float(t), dtype=dt, device=Im.device)

    ti, tt = rows(tau_img), rows(tau_txt)
    pos = (Im * Tx).sum(-1)
    if group is None:
        rmax, cmax = _row_col_max(Im, Tx, eng.get("chunk_size"))
    else:  # the running shift needs the maxima over every rank's samples (forward only)
        both = gather_rows(torch.stack([Im.detach(), Tx.detach()], 1), "maxima", group=group)
        rmax = _row_max(Im, both[:, 1], eng.get("chunk_size"))
        cmax = _row_max(Tx, both[:, 0], eng.get("chunk_size"))
    w = row_weight(reduction, n, group=None) / 2  # the global count, gathered
    grad_mode = torch.is_grad_enabled()
    res = []
    total: Union[float, Tensor] = 0.0
    for A, C, smax, tau, g, key in (
        (Im, Tx, rmax, ti, gammas[0], "img"),
        (Tx, Im, cmax, tt, gammas[1], "txt"),
    ):
        if gammas[2] is not None and float(st["u_" + key].detach()[index_all].sum()) == 0.0:
            g = gammas[2]  # LibAUC's first-epoch rule, per direction, on the global batch
        u_old = st["u_" + key].detach()[index].to(dt)
        b_old = st["b_" + key].detach()[index].to(dt)
        out, u_new, b_new, mass, ce = _direction(
            A, C, pos, smax, u_old, b_old, tau, g, eps, w, n, reduction, eng, group
        )
        total = total + out
        res.append((u_new, b_new, mass, ce, tau, pos.detach()))
    assert isinstance(total, Tensor)  # both directions added
    if not (grad_mode and (image.requires_grad or text.requires_grad)):
        total = total.detach()
    return total, res, index_all, n, group


def _new_states(st, res) -> list:
    """The new (u_img, b_img, u_txt, b_txt) of this rank's rows, in the states' dtypes."""
    out = []
    for (u_new, b_new, *_), key in zip(res, ("img", "txt")):
        out += [u_new.to(st["u_" + key].dtype), b_new.to(st["b_" + key].dtype)]
    return out


def _exchange(values: list, group) -> list:
    """Every rank's per-row values (each (B,)), rank-major: one all-gather of a (B, k) block in
    a dtype exact for all of them (the identity without a group)."""
    dt = values[0].dtype
    for v in values[1:]:
        dt = torch.promote_types(dt, v.dtype)
    block = _share_rows(torch.stack([v.to(dt) for v in values], 1), group)
    return [block[:, i].to(v.dtype) for i, v in enumerate(values)]


def _write(st, index_all, new):
    with torch.no_grad():
        for name, v in zip(_STATES, new):
            st[name][index_all] = v


@exact_objective
def sogclr_bimodal(
    image: Tensor,
    text: Tensor,
    index: Tensor,
    u_img: Tensor,
    b_img: Tensor,
    u_txt: Tensor,
    b_txt: Tensor,
    *,
    temperature: float = 0.01,
    gamma: float = 0.9,
    gamma_txt: Optional[float] = None,
    gamma_unseen: Optional[float] = None,
    eps: float = 1e-20,
    update: bool = True,
    normalize: bool = False,
    reduction: str = "mean",
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """Bimodal SogCLR of paired ``image``, ``text`` (B, d), B >= 2, with dataset ``index`` (B,);
    the four states (n_samples,) are updated in place when ``update``. ``gamma_txt`` defaults
    to ``gamma``; ``gamma_unseen`` (when given) replaces the gamma of a direction whose state
    is all zero at the batch's indices (the modules pass 1 in the first epoch, LibAUC's rule).
    ``reduction="none"``: per-pair values (B,) whose mean is the loss.

    Under a process group (exact): every rank passes its own pairs and index and the *whole*
    states, identical on every rank; its images are contrasted with every rank's texts (and
    its texts with every rank's images), the loss is that of one process on the concatenated
    batch, and the running maxima and the unseen test are over the global batch. With
    ``update`` the four new values of every rank's pairs are exchanged (an all-gather of the
    indices and a (B, 4) block), so every rank's states equal the single-process ones."""
    eng = engine_args(chunk_size, backend)
    check_temperature("temperature", temperature)
    st = {"u_img": u_img, "b_img": b_img, "u_txt": u_txt, "b_txt": b_txt}
    gammas = (gamma, gamma if gamma_txt is None else gamma_txt, gamma_unseen)
    loss, res, index_all, _, group = _bimodal(
        image, text, index, st, temperature, temperature, gammas, eps, reduction, normalize, eng
    )
    if update:
        with torch.no_grad():
            _write(st, index_all, _exchange(_new_states(st, res), group))
    return loss


@exact_objective
def isogclr_bimodal(
    image: Tensor,
    text: Tensor,
    index: Tensor,
    u_img: Tensor,
    b_img: Tensor,
    u_txt: Tensor,
    b_txt: Tensor,
    tau_img: Tensor,
    tau_txt: Tensor,
    grad_tau_img: Tensor,
    grad_tau_txt: Tensor,
    *,
    gamma: float = 0.9,
    gamma_txt: Optional[float] = None,
    gamma_unseen: Optional[float] = None,
    rho: float = 6.0,
    eta: float = 0.01,
    beta: float = 0.9,
    min_temperature: float = 0.005,
    max_temperature: float = 0.05,
    eps: float = 1e-20,
    update: bool = True,
    normalize: bool = False,
    reduction: str = "mean",
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """Bimodal iSogCLR: per-sample temperatures ``tau_img[index]`` (image rows) and
    ``tau_txt[index]`` (text rows); all eight states (n_samples,) are updated in place.

    Under a process group as :func:`sogclr_bimodal`; the exchange carries six values per pair
    (the four SogCLR states and the two temperature gradients) and every rank applies the same
    momentum and temperature steps to the global batch's entries."""
    eng = engine_args(chunk_size, backend)
    _check_isog(rho, eta, beta, min_temperature, max_temperature)
    st = {"u_img": u_img, "b_img": b_img, "u_txt": u_txt, "b_txt": b_txt}
    extra = {"tau_img": tau_img, "tau_txt": tau_txt}
    extra.update(grad_tau_img=grad_tau_img, grad_tau_txt=grad_tau_txt)
    check_embeddings("image", image)
    for name, t in extra.items():
        _check_state(name, t, u_img.shape[0] if isinstance(u_img, Tensor) else None, image)
    if not bool((tau_img > 0).all()) or not bool((tau_txt > 0).all()):
        raise ValueError("tau_img and tau_txt (the per-sample temperatures) must be > 0")
    gammas = (gamma, gamma if gamma_txt is None else gamma_txt, gamma_unseen)
    loss, res, index_all, n, group = _bimodal(
        image, text, index, st, tau_img, tau_txt, gammas, eps, reduction, normalize, eng
    )
    if update:
        with torch.no_grad():
            grads = []
            for u_new, b_new, mass, ce, tau, s_ii in res:
                # sum_j p_ij l_ij / tau = (C E - C s_ii) / tau
                grads.append(torch.log(u_new) + rho + b_new - (ce - mass * s_ii) / (tau * (n - 1)))
            new = _exchange(_new_states(st, res) + grads, group)
            for grad, key in zip(new[4:], ("img", "txt")):
                g = extra["grad_tau_" + key]
                g[index_all] = ((1.0 - beta) * g[index_all] + beta * grad.to(g.dtype)).to(g.dtype)
                t = extra["tau_" + key]
                t[index_all] = (t[index_all] - eta * g[index_all]).clamp(
                    min=min_temperature, max=max_temperature
                )
            _write(st, index_all, new[:4])
    return loss


_STATES = ("u_img", "b_img", "u_txt", "b_txt")


class SogCLRBimodal(_GammaSchedule):
    """Bimodal SogCLR (image-text): the global contrastive loss of :class:`SogCLR` for paired
    images and texts, with per-sample moving-average normalisers for both directions and a
    running shift that keeps them finite at small temperatures (LibAUC ``GCLoss_v2``).

    Image ``i`` against the ``B - 1`` texts ``j != i`` (symmetrically text against images)::

        l_ij = s_ij - s_ii,    b_i <- max(b_i, max_j l_ij / tau)
        u_i  <- max(eps, (1 - gamma) u_i exp(b_old - b_i)
                         + gamma mean_{j != i} exp(l_ij / tau - b_i))
        p_ij = exp(l_ij / tau - b_i) / u_i                                (detached)
        loss = (mean_i sum_{j != i} p_ij l_ij  +  the same for texts) / 2

    Buffers ``u_img, b_img, u_txt, b_txt`` (n_samples,), updated in training mode only.

    Under a process group (``torch.distributed``) the loss and gradients are those of one
    process on the concatenated batch (each rank's images against every rank's texts and
    vice versa; the running shift from the maxima over every rank's samples). Every rank keeps
    the whole buffers; after each step the four new values of every rank's pairs are
    all-gathered with the indices, so the buffers are identical on every rank and equal to one
    process's (LibAUC gathers ``u`` but keeps ``b`` per rank).

    Args:
        n_samples (int): dataset size.
        temperature (float, default 0.01): tau (LibAUC ``GCLoss_v2``).
        gamma (float, default 0.9), gamma_schedule (str, default "constant"),
            gamma_decay_epochs (int or None, default None): as :class:`SogCLR`, per direction.
        eps (float, default 1e-20): floor of the normalisers.
        normalize (bool, default False): L2-normalise the inputs (LibAUC does not).
        reduction (str, default "mean"): "mean" | "sum" | "none" (per-pair terms (B,)).
        chunk_size (int or None, default None), backend (str, default "auto"): engine options.

    Inputs:
        - ``image``, ``text`` (B, d) float, B >= 2: row ``i`` of each is a positive pair.
        - ``index`` (B,) int64: dataset indices of the pairs (distinct within a batch).

    Example::

        import torch
        import contrastkit as ck

        loss_fn = ck.SogCLRBimodal(n_samples=100, normalize=True)
        image, text, index = torch.randn(8, 16), torch.randn(8, 16), torch.arange(8)
        loss = loss_fn(image, text, index)

    See also:
        :class:`iSogCLRBimodal`, :class:`SogCLR`, :class:`CLIP`.

    References:
        Yuan et al., "Provable Stochastic Optimization for Global Contrastive Learning: Small
        Batch Does Not Harm Performance", ICML 2022, arXiv:2202.12387
        (github.com/Optimization-AI/LibAUC).
    """

    u_img: Tensor  # buffer, registered in _init_schedule

    def __init__(
        self,
        n_samples: int,
        temperature: float = 0.01,
        gamma: float = 0.9,
        gamma_schedule: str = "constant",
        gamma_decay_epochs: Optional[int] = None,
        eps: float = 1e-20,
        normalize: bool = False,
        reduction: str = "mean",
        chunk_size: Optional[int] = None,
        backend: str = "auto",
    ):
        super().__init__()
        check_temperature("temperature", temperature)
        check_reduction(reduction)
        engine_args(chunk_size, backend)
        self._init_schedule(n_samples, gamma, gamma_schedule, gamma_decay_epochs, eps, _STATES)
        self.temperature, self.normalize = temperature, normalize
        self.reduction, self.chunk_size, self.backend = reduction, chunk_size, backend

    def forward(self, image: Tensor, text: Tensor, index: Tensor) -> Tensor:
        gamma, gamma_unseen = self.gamma_args()
        return sogclr_bimodal(
            image,
            text,
            index,
            self.u_img,
            self.b_img,
            self.u_txt,
            self.b_txt,
            temperature=self.temperature,
            gamma=gamma,
            gamma_unseen=gamma_unseen,
            eps=self.eps,
            update=self.training,
            normalize=self.normalize,
            reduction=self.reduction,
            chunk_size=self.chunk_size,
            backend=self.backend,
        )


class iSogCLRBimodal(SogCLRBimodal):  # noqa: N801 (the paper's name)
    """Bimodal iSogCLR: :class:`SogCLRBimodal` with an individual temperature per image and per
    text, learned by a momentum step after every call (LibAUC
    ``GCLoss_v2(temperature_scheme='individual_learnable')``).

    Per direction, after each training-mode call (no autograd)::

        grad_i = log u_i + rho + b_i - (1/(B-1)) sum_{j != i} p_ij l_ij / tau_i
        g_i <- (1 - beta) g_i + beta grad_i
        tau_i <- clamp(tau_i - eta g_i, min_temperature, max_temperature)

    Besides the SogCLR states, buffers ``tau_img, tau_txt`` (init ``temperature``) and
    ``grad_tau_img, grad_tau_txt`` (LibAUC's names). Under a process group as
    :class:`SogCLRBimodal`, with the two temperature gradients in the exchange (six values a
    pair): every rank applies the same temperature steps, so all eight buffers stay identical
    on every rank and equal to one process's.

    Args:
        n_samples (int): dataset size.
        temperature (float, default 0.01): initial per-sample temperature.
        rho (float, default 6.0), eta (float, default 0.01), beta (float, default 0.9): as
            :class:`iSogCLR`.
        min_temperature (float, default 0.005), max_temperature (float, default 0.05): the
            clamp of the per-sample temperatures.
        gamma, gamma_schedule, gamma_decay_epochs, eps, normalize: as :class:`SogCLRBimodal`.
        reduction (str, default "mean"): "mean" | "sum" | "none" (per-pair terms (B,)).
        chunk_size (int or None, default None), backend (str, default "auto"): engine options.

    Inputs:
        - ``image``, ``text`` (B, d) float, B >= 2: row ``i`` of each is a positive pair.
        - ``index`` (B,) int64: dataset indices of the pairs (distinct within a batch).

    Example::

        import torch
        import contrastkit as ck

        loss_fn = ck.iSogCLRBimodal(n_samples=100, normalize=True)
        image, text, index = torch.randn(8, 16), torch.randn(8, 16), torch.arange(8)
        loss = loss_fn(image, text, index)

    See also:
        :class:`SogCLRBimodal`, :class:`iSogCLR`.

    References:
        Qiu et al., "Not All Semantics are Created Equal: Contrastive Self-supervised Learning
        with Automatic Temperature Individualization", ICML 2023, arXiv:2305.11965.
    """

    def __init__(
        self,
        n_samples: int,
        temperature: float = 0.01,
        rho: float = 6.0,
        eta: float = 0.01,
        beta: float = 0.9,
        min_temperature: float = 0.005,
        max_temperature: float = 0.05,
        gamma: float = 0.9,
        gamma_schedule: str = "constant",
        gamma_decay_epochs: Optional[int] = None,
        eps: float = 1e-20,
        normalize: bool = False,
        reduction: str = "mean",
        chunk_size: Optional[int] = None,
        backend: str = "auto",
    ):
        super().__init__(
            n_samples,
            temperature,
            gamma,
            gamma_schedule,
            gamma_decay_epochs,
            eps,
            normalize,
            reduction,
            chunk_size,
            backend,
        )
        _check_isog(rho, eta, beta, min_temperature, max_temperature)
        self.rho, self.eta, self.beta, self.min_temperature, self.max_temperature = (
            rho,
            eta,
            beta,
            min_temperature,
            max_temperature,
        )
        for name in ("tau_img", "tau_txt"):
            self.register_buffer(name, torch.full((n_samples,), float(temperature)))
        for name in ("grad_tau_img", "grad_tau_txt"):
            self.register_buffer(name, torch.zeros(n_samples))

    def forward(self, image: Tensor, text: Tensor, index: Tensor) -> Tensor:
        gamma, gamma_unseen = self.gamma_args()
        return isogclr_bimodal(
            image,
            text,
            index,
            self.u_img,
            self.b_img,
            self.u_txt,
            self.b_txt,
            self.tau_img,
            self.tau_txt,
            self.grad_tau_img,
            self.grad_tau_txt,
            gamma=gamma,
            gamma_unseen=gamma_unseen,
            rho=self.rho,
            eta=self.eta,
            beta=self.beta,
            min_temperature=self.min_temperature,
            max_temperature=self.max_temperature,
            eps=self.eps,
            update=self.training,
            normalize=self.normalize,
            reduction=self.reduction,
            chunk_size=self.chunk_size,
            backend=self.backend,
        )
