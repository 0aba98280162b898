"""ALBEF's image-text contrastive loss with momentum distillation: soft targets mixing a momentum
model's in-batch (and queue) softmax with the one-hot pairing, both directions, on the engine
with the targets computed per chunk and normalised in the sweep (exact under a process group:
the momentum batch is gathered without gradient, the queue is shared)."""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor, nn

from ..._validation import (
    check_compatible,
    check_embeddings,
    check_number,
    check_range,
    check_temperature,
)
from ...engine import LSETerm, RowSpec, RowStatistics, SoftTargets
from ...memory import Queue
from ...objective import (
    check_has_negatives,
    engine_args,
    exact_objective,
    gather_rows,
    global_total,
    kappa,
    objective_group,
    prepare,
    row_offset,
    row_weight,
    run,
)

__all__ = ["momentum_distillation", "MomentumDistillation"]

_PREPASS_ROWS = 256
LOG2E = 1.0 / math.log(2.0)


def _teacher_lse(anchors: Tensor, cands: Tensor, k: Tensor, block: int) -> Tensor:
    """``LSE_j(k <anchors_i, cands_j>)`` per row, in row blocks of ``block x M`` (no gradient)."""
    out = torch.empty(anchors.shape[0], dtype=anchors.dtype, device=anchors.device)
    for r0 in range(0, anchors.shape[0], block):
        out[r0 : r0 + block] = torch.logsumexp((anchors[r0 : r0 + block] @ cands.T) * k, dim=1)
    return out


def _direction(
    anchors: Tensor,
    teacher: Tensor,
    cands: Tensor,
    kap: Tensor,
    alpha: float,
    positive: Tensor,
    w: float,
    reduction: str,
    eng: dict,
    block: int,
) -> Tensor:
    """``-sum_j y_ij log softmax_j(kappa <anchors_i, cands_j>)`` with
    ``y_ij = alpha softmax_j(kappa <teacher_i, cands_j>) + (1 - alpha) [j = positive_i]``, times
    ``w``, over this rank's anchors (the candidates are every rank's already)."""

    if alpha == 0.0:

        def plain(st: RowStatistics, sd: dict) -> Tensor:
            assert st.ce is not None  # RowSpec.positive asks for it
            return w * st.ce

        spec = RowSpec(terms=(LSETerm(),), row_fn=plain, positive=positive)
        return run(anchors, cands, spec, kap, reduction, eng, group=None)
    kt = kap.detach()  # the targets use the current temperature, without gradient
    teacher2 = teacher * (kt * LOG2E)  # base-2 teacher logits t2 = teacher2 @ cands^T
    t_lse: list[Tensor] = []  # the natural-log row normalisers, for the paths that call fn

    def logits(r0: int, r1: int, c0: int, c1: int, out: Tensor) -> Tensor:
        return torch.mm(teacher2[r0:r1], cands[c0:c1].T, out=out)

    def targets(r0: int, r1: int, c0: int, c1: int) -> Tensor:
        if not t_lse:  # a pre-pass, only on paths without the in-sweep normaliser
            t_lse.append(_teacher_lse(teacher, cands, kt, block))
        return torch.exp((teacher[r0:r1] @ cands[c0:c1].T) * kt - t_lse[0][r0:r1, None])

    def row_fn(st: RowStatistics, sd: dict) -> Tensor:
        assert st.lse is not None and st.ce is not None and st.tgt is not None
        assert st.mass is not None  # asked for by soft targets / positive
        # sum_j y_ij (lse_i - u_ij): the soft part from the sweep (mass = 1), the one-hot
        # part as the cross-entropy read from the tile
        return w * ((1.0 - alpha) * st.ce + alpha * (st.mass * st.lse[0] - st.tgt))

    spec = RowSpec(
        terms=(LSETerm(),),
        soft_targets=SoftTargets(targets, logits=logits),
        row_fn=row_fn,
        positive=positive,
    )
    return run(anchors, cands, spec, kap, reduction, eng, group=None)


def _features(name: str, x: Tensor, normalize: bool, ref: Tensor, rows: Optional[int]) -> Tensor:
    check_embeddings(name, x, min_rows=0 if rows is None else 1)
    check_compatible("image", ref, name, x, same_rows=rows is not None)
    return prepare(x.detach(), normalize)


@exact_objective
def momentum_distillation(
    image: Tensor,
    text: Tensor,
    image_momentum: Tensor,
    text_momentum: Tensor,
    image_queue: Optional[Tensor] = None,
    text_queue: Optional[Tensor] = None,
    *,
    alpha: float = 0.4,
    temperature: Union[float, Tensor] = 0.07,
    normalize: bool = True,
    reduction: str = "mean",
    chunk_size: Optional[int] = None,
    backend: str = "auto",
) -> Tensor:
    """ALBEF's image-text contrastive loss with momentum distillation; see
    :class:`MomentumDistillation`."""
    group = objective_group()
    eng = engine_args(chunk_size, backend)
    check_embeddings("image", image)
    check_embeddings("text", text)
    check_compatible("image", image, "text", text, same_rows=True)
    alpha = check_number("alpha", alpha)
    check_range("alpha", alpha, 0.0, 1.0, hi_open=False)
    check_temperature("temperature", temperature)
    if not isinstance(normalize, bool):
        raise ValueError(f"normalize must be a bool, got {normalize!r}")
    n = image.shape[0]
    v, t = prepare(image, normalize), prepare(text, normalize)
    vm = _features("image_momentum", image_momentum, normalize, image, n).to(v.dtype)
    tm = _features("text_momentum", text_momentum, normalize, image, n).to(v.dtype)
    # every rank's momentum batch (no gradient), then the shared queues
    image_cands = gather_rows(vm, "image_momentum", group=group)
    text_cands = gather_rows(tm, "text_momentum", group=group)
    if image_queue is not None:
        q = _features("image_queue", image_queue, normalize, image, None).to(v.dtype)
        image_cands = torch.cat([image_cands, q])
    if text_queue is not None:
        q = _features("text_queue", text_queue, normalize, image, None).to(v.dtype)
        text_cands = torch.cat([text_cands, q])
    if min(len(image_cands), len(text_cands)) < 2:  # one pair and no queue: no negative
        check_has_negatives("image", image, "momentum distillation", unit="pair", group=group)
    kap = kappa(v, temperature, group=group)
    positive = torch.arange(n, device=v.device) + row_offset(n, group=group)
    w = row_weight(reduction, n, group=group) * 0.5
    block = chunk_size or _PREPASS_ROWS
    i2t = _direction(v, vm, text_cands, kap, alpha, positive, w, reduction, eng, block)
    t2i = _direction(t, tm, image_cands, kap, alpha, positive, w, reduction, eng, block)
    return global_total(i2t + t2i, group=group)


@exact_objective
def _gathered(x: Tensor) -> Tensor:
    """Every rank's rows of ``x`` (rank-major, no gradient): what the queues receive."""
    return gather_rows(x.detach(), "momentum features", group=objective_group())


class MomentumDistillation(nn.Module):
    """ALBEF's image-text contrastive loss (ITC) with momentum distillation and feature queues.

    An image-text contrastive loss whose targets are softened by a momentum (EMA) copy of the
    model: for each image the target over the candidate texts mixes the momentum model's own
    softmax (weight ``alpha``) with the one-hot pairing (weight ``1 - alpha``), so that a
    caption that fits the image but belongs to another pair is not pushed away as hard as an
    unrelated one (web captions are noisy). The candidates are the momentum model's features of
    the batch followed by a queue of earlier momentum features (the other modality's queue in
    each direction); they carry no gradient, so only the student's anchors and the temperature
    learn. This module holds the state: both queues (random unit vectors at the start, as
    ALBEF) and the learnable temperature, clamped in place to ``temperature_range`` at every
    call. The momentum encoders are yours (e.g. :class:`~contrastkit.memory.MomentumEncoder`,
    updated before computing the momentum features). Each call returns the loss, then enqueues
    the momentum features of the global batch. With student features ``v_i, w_i``, momentum
    features ``v^m_i, w^m_i``, queues ``Q_v, Q_w`` and temperature ``tau``::

        W = [w^m_1 .. w^m_N ; Q_w]            V = [v^m_1 .. v^m_N ; Q_v]
        y^i2t_ij = alpha softmax_j(<v^m_i, W_j> / tau) + (1 - alpha) [j = i]
        L_i2t    = -(1/N) sum_i sum_j y^i2t_ij log softmax_j(<v_i, W_j> / tau)
        L_t2i    = the same with (w, w^m, V) in place of (v, v^m, W)
        loss     = (L_i2t + L_t2i) / 2

    The functional :func:`momentum_distillation` computes one step's loss from given queues.
    Both directions run on the engine as two row problems (anchors: this rank's ``v`` or
    ``w``; columns: every momentum feature and the queue), the momentum model's logits
    computed per chunk beside the student's and normalised in the same sweep (an online
    softmax, no pre-pass; no gradient), so neither the student's nor the momentum model's
    N x (N + Q) matrix is stored: memory O((N + Q) d) plus a tile. FLOPs per direction: the
    student's and the momentum model's products (``2 x 2 N (N + Q) d``) and the anchors'
    gradient (``2 N (N + Q) d``; the candidates carry none), the ``6 N (N + Q) d`` of one
    InfoNCE. The one-hot part is the engine's cross-entropy with the positive read from the
    logit tile.
    ``alpha = 0`` gives InfoNCE with a MoCo queue in each direction, where the positive's key
    is the momentum feature; ALBEF warms ``alpha`` up linearly over the first epoch
    (``alpha * min(1, step / steps_per_epoch)``: pass ``alpha=`` per call). The value is the
    cross-entropy with the soft targets, as ALBEF reports it (the KL plus the targets' entropy;
    same gradient). Exact under a ``torch.distributed`` process group: the momentum features
    of every rank are candidates of every anchor (gathered without gradient), the queues are
    shared (every rank holds the same queue: each enqueues the gathered batch), the
    temperature receives the global gradient. ALBEF's own code uses only the rank's local
    momentum batch as in-batch candidates; ``with contrastkit.distributed.local():`` computes
    that per-rank loss.

    Args:
        dim (int): feature dimension (ALBEF: 256).
        queue_size (int, optional): rows per queue (ALBEF: 65,536); ``None``: no queue (the
            in-batch momentum features only).
        alpha (float): weight of the momentum model's softmax in the targets, in [0, 1]
            (ALBEF: 0.4). A call may override it (``alpha=`` keyword, e.g. for the warm-up).
        init_temperature (float): initial ``tau`` (ALBEF: 0.07).
        temperature_range (tuple): ``tau`` is clamped to it in place before every call
            (ALBEF: ``(0.001, 0.5)``).
        learnable (bool): ``tau`` is a parameter (default) or a fixed buffer.
        normalize (bool): L2-normalise every feature first (default ``True``; ALBEF's
            projections are normalised).
        chunk_size (int, optional), backend (str): engine options, as :class:`InfoNCE`.
        generator (torch.Generator, optional): for the queues' random initialisation.

    Inputs:
        ==================  ==========  ================================================
        input               shape       meaning
        ==================  ==========  ================================================
        ``image``           ``(N, d)``  the student's image features (anchors i2t)
        ``text``            ``(N, d)``  the student's text features of the same pairs
        ``image_momentum``  ``(N, d)``  the momentum model's image features (detached)
        ``text_momentum``   ``(N, d)``  the momentum model's text features (detached)
        ==================  ==========  ================================================

        The functional also takes ``image_queue`` and ``text_queue`` ``(Q, d)`` (optional):
        earlier momentum features, negatives of every anchor.

    Example::

        import torch
        from contrastkit.losses.distillation import MomentumDistillation

        itc = MomentumDistillation(dim=16, queue_size=32)
        image, text = torch.randn(8, 16), torch.randn(8, 16)
        image_m = image + 0.1 * torch.randn(8, 16)  # a momentum encoder's features
        text_m = text + 0.1 * torch.randn(8, 16)
        loss = itc(image, text, image_m, text_m)  # then the 8 momentum pairs are enqueued

    See also:
        :class:`InBatchKLDistillation` (soft targets from a teacher's embeddings),
        :class:`InfoNCE` (with ``negatives=``: a MoCo queue), :class:`CLIP`.

    References:
        Li, Selvaraju, Gotmare, Joty, Xiong, Hoi, "Align before Fuse: Vision and Language
        Representation Learning with Momentum Distillation", arXiv:2107.07651.
    """

    def __init__(
        self,
        dim: int,
        queue_size: Optional[int] = 65536,
        *,
        alpha: float = 0.4,
        init_temperature: float = 0.07,
        temperature_range: tuple = (0.001, 0.5),
        learnable: bool = True,
        normalize: bool = True,
        chunk_size: Optional[int] = None,
        backend: str = "auto",
        generator: Optional[torch.Generator] = None,
    ):
        super().__init__()
        check_range("alpha", check_number("alpha", alpha), 0.0, 1.0, hi_open=False)
        check_temperature("init_temperature", init_temperature)
        lo, hi = (check_number("temperature_range", x, minimum=0.0) for x in temperature_range)
        if not 0 < lo <= init_temperature <= hi:
            raise ValueError(
                f"temperature_range must satisfy 0 < low <= init_temperature <= high, got "
                f"{tuple(temperature_range)} with init_temperature={init_temperature}"
            )
        engine_args(chunk_size, backend)
        if not isinstance(normalize, bool):
            raise ValueError(f"normalize must be a bool, got {normalize!r}")
        self.alpha = float(alpha)
        self.temperature_range = (lo, hi)
        self.normalize, self.chunk_size, self.backend = normalize, chunk_size, backend
        tau = torch.tensor(float(init_temperature))
        if learnable:
            self.temperature = nn.Parameter(tau)
        else:
            self.register_buffer("temperature", tau)
        self.image_queue: Optional[Queue] = None
        self.text_queue: Optional[Queue] = None
        if queue_size is not None:
            self.image_queue = Queue(queue_size, dim).random_init(generator)
            self.text_queue = Queue(queue_size, dim).random_init(generator)

    def forward(
        self,
        image: Tensor,
        text: Tensor,
        image_momentum: Tensor,
        text_momentum: Tensor,
        *,
        alpha: Optional[float] = None,
    ) -> Tensor:
        """The loss of this step (queues as they were before it), then the momentum features
        of the global batch enqueued. ``alpha``: this call's weight (default: the module's)."""
        with torch.no_grad():
            self.temperature.clamp_(*self.temperature_range)
        queues: tuple = ()
        if self.image_queue is not None and self.text_queue is not None:
            queues = (self.image_queue.keys, self.text_queue.keys)
            if isinstance(image, Tensor) and image.is_floating_point():
                queues = tuple(q.to(image.dtype) for q in queues)
        loss = momentum_distillation(
            image,
            text,
            image_momentum,
            text_momentum,
            *queues,
            alpha=self.alpha if alpha is None else alpha,
            temperature=self.temperature.to(image.device)
            if isinstance(image, Tensor)
            else self.temperature,
            normalize=self.normalize,
            reduction="mean",
            chunk_size=self.chunk_size,
            backend=self.backend,
        )
        if self.image_queue is not None and self.text_queue is not None:
            # ALBEF enqueues the normalised momentum features of the gathered batch
            img = prepare(_gathered(image_momentum), self.normalize)
            txt = prepare(_gathered(text_momentum), self.normalize)
            self.image_queue.enqueue(img)  # cast to the queue's dtype there
            self.text_queue.enqueue(txt)
        return loss

    def extra_repr(self) -> str:
        size = None if self.image_queue is None else self.image_queue.size
        tau = float(self.temperature.detach())
        return (
            f"queue_size={size}, alpha={self.alpha}, temperature={tau:.4g}, "
            f"temperature_range={self.temperature_range}"
        )
