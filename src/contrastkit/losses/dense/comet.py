"""COMET (Wang et al. 2023, arXiv:2310.14017): hierarchical contrast of medical time series
at four levels (patient, trial, sample, observation), a weighted sum of per-level losses.
Dense like the official code (per-timestamp ``2B x 2B``, per-sample ``2T x 2T`` and ``B x B``
similarity matrices); exact under a process group (the other ranks' samples are gathered)."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..._validation import check_labels, check_number, check_temperature, check_tensor
from ...objective import (
    EPS,
    Objective,
    exact_objective,
    gather_rows,
    global_rows,
    objective_group,
    reduce,
    row_offset,
    wide,
)

__all__ = ["comet", "COMET"]

NEG = float("-inf")


def _depths(z1: Tensor, z2: Tensor, hierarchical: bool):
    """``(z1, z2)`` at every depth: halved in time by max-pooling while ``T > 1`` (the levels
    with ``T > 1``; just the input when ``T = 1`` or not ``hierarchical``)."""
    out = [(z1, z2)]
    while hierarchical and z1.shape[1] > 1:
        z1 = F.max_pool1d(z1.transpose(1, 2), kernel_size=2).transpose(1, 2)
        z2 = F.max_pool1d(z2.transpose(1, 2), kernel_size=2).transpose(1, 2)
        if z1.shape[1] > 1:
            out.append((z1, z2))
        else:
            break
    return out


def _observation(z1: Tensor, z2: Tensor) -> Tensor:
    """Per sample ``(B,)``: the sum over its 2T timestamps (both views) of the cross-entropy of
    the other view's same timestamp among the sample's other 2T - 1 timestamps (raw dot
    products, no temperature; TS2Vec's temporal loss)."""
    b, t, _ = z1.shape
    z = torch.cat([z1, z2], dim=1)
    u = torch.bmm(z, z.transpose(1, 2))
    eye = torch.eye(2 * t, dtype=torch.bool, device=z.device)
    u = u.masked_fill(eye, NEG)
    partner = (torch.arange(2 * t, device=z.device) + t) % (2 * t)
    logp = u.log_softmax(-1)
    return -logp[:, torch.arange(2 * t, device=z.device), partner].sum(1)


def _sample(z1: Tensor, z2: Tensor, group) -> Tensor:
    """Per local sample ``(B,)``: the sum over its T timestamps and both views of the
    cross-entropy of its other view among every other sample's view at the same timestamp
    (the 2B' views of the global batch; TS2Vec's instance loss)."""
    b, t, _ = z1.shape
    g1, g2 = gather_rows(z1, "z1", group=group), gather_rows(z2, "z2", group=group)
    bg, off = g1.shape[0], row_offset(b, group=group)
    cand = torch.cat([g1, g2]).transpose(0, 1)  # (T, 2B', C)
    anc = torch.cat([z1, z2]).transpose(0, 1)  # (T, 2B, C)
    u = torch.bmm(anc, cand.transpose(1, 2))  # (T, 2B, 2B')
    local = torch.arange(b, device=z1.device) + off
    own = torch.cat([local, local + bg])
    partner = torch.cat([local + bg, local])
    rows = torch.arange(2 * b, device=z1.device)
    u = u.index_put((torch.arange(t, device=z1.device)[:, None], rows[None, :], own[None, :]),
                    torch.tensor(NEG, dtype=u.dtype, device=u.device))  # fmt: skip
    logp = u.log_softmax(-1)
    terms = -logp[:, rows, partner]  # (T, 2B)
    return terms.sum(0).reshape(2, b).sum(0)


def _identity(z1: Tensor, z2: Tensor, ids: Tensor, name: str, temperature: float, group):
    """COMET's trial / patient term as per-sample sums ``(B,)`` and the global number of
    same-id pairs ``i < j``: pair ``(i, j)`` with the same id (``i != j``) contributes
    ``-log(e^{u_ij} / sum_k e^{u_ik})`` when ``i < j`` (row sum, charged to sample i) and
    ``-log(e^{u_ij} / sum_k e^{u_kj})`` when ``i > j`` (column sum, charged to sample j), with
    ``u`` the cosine / temperature of view-1 row i and view-2 row j, each normalised along
    time and flattened (the official code's layout)."""
    b = z1.shape[0]
    a1 = F.normalize(z1, dim=1, eps=EPS).reshape(b, z1.shape[1] * z1.shape[2])
    a2 = F.normalize(z2, dim=1, eps=EPS).reshape(b, z2.shape[1] * z2.shape[2])
    a1 = a1 / a1.norm(dim=1, keepdim=True).clamp(min=EPS)
    a2 = a2 / a2.norm(dim=1, keepdim=True).clamp(min=EPS)
    g1, g2 = gather_rows(a1, "z1", group=group), gather_rows(a2, "z2", group=group)
    gid = gather_rows(ids, name, group=group)
    mine = torch.arange(b, device=z1.device) + row_offset(b, group=group)
    later = torch.arange(g1.shape[0], device=z1.device)[None, :] > mine[:, None]
    same_later = (ids[:, None] == gid[None, :]) & later  # this rank's i (or j), i < j
    # upper pairs (i < j): local view-1 row i against every view-2 row, row sums
    ur = (a1 @ g2.T) / temperature
    rows = ((ur.logsumexp(1)[:, None] - ur) * same_later).sum(1)
    # lower pairs (i > j): local view-2 row j against every view-1 row, column sums
    uc = (a2 @ g1.T) / temperature
    cols = ((uc.logsumexp(1)[:, None] - uc) * same_later).sum(1)
    total = (int((gid[:, None] == gid[None, :]).sum()) - gid.shape[0]) // 2  # pairs i < j
    return rows + cols, total


@exact_objective
def comet(
    z1: Tensor,
    z2: Tensor,
    patient_ids: Optional[Tensor] = None,
    trial_ids: Optional[Tensor] = None,
    *,
    weights: Sequence[float] = (0.25, 0.25, 0.25, 0.25),
    hierarchical: bool = True,
    temperature: float = 0.1,
    reduction: str = "mean",
) -> Tensor:
    """COMET's hierarchical multi-level contrast; see :class:`COMET`."""
    group = objective_group()
    for name, z in (("z1", z1), ("z2", z2)):
        check_tensor(name, z, ndim=3, kind="float", min_rows=0)
        if z.shape[1] == 0 or z.shape[2] == 0:
            raise ValueError(f"{name} must have T, C >= 1, got shape {tuple(z.shape)}")
    if z2.shape != z1.shape or z2.dtype != z1.dtype or z2.device != z1.device:
        raise ValueError(
            f"z2 must match z1 in shape, dtype and device: {tuple(z2.shape)} {z2.dtype} vs "
            f"{tuple(z1.shape)} {z1.dtype}"
        )
    if isinstance(weights, Tensor) or len(weights) != 4:
        raise ValueError(
            f"weights must be 4 numbers (patient, trial, sample, observation), got {weights!r}"
        )
    w = [check_number(f"weights[{i}]", v, minimum=0.0) for i, v in enumerate(weights)]
    if not isinstance(hierarchical, bool):
        raise ValueError(f"hierarchical must be a bool, got {hierarchical!r}")
    check_temperature("temperature", temperature)
    if isinstance(temperature, Tensor):
        raise ValueError("temperature must be a number (the official value is fixed at 0.1)")
    if reduction not in ("mean", "none"):
        raise ValueError(
            f"reduction must be 'mean' or 'none' (COMET sums means over different units: "
            f"timestamps, samples, pairs; 'sum' has no meaning), got {reduction!r}"
        )
    b = z1.shape[0]
    ids = []
    for name, v, wi in (("patient_ids", patient_ids, w[0]), ("trial_ids", trial_ids, w[1])):
        if v is None:
            if wi > 0:
                raise ValueError(f"{name} is required when its level's weight is > 0")
        else:
            check_labels(name, v, b, z1)
        ids.append(v)
    x1, x2 = wide(z1), wide(z2)
    rows = x1.new_zeros(b)
    for level, fn in ((3, "obs"), (2, "sample")):
        if w[level] == 0:
            continue
        levels = _depths(x1, x2, hierarchical)
        for d1, d2 in levels:
            terms = _observation(d1, d2) if fn == "obs" else _sample(d1, d2, group)
            count = 2 * global_rows(b, group=group) * d1.shape[1]
            rows = rows + terms * (w[level] / (len(levels) * max(count, 1)))
    for level in (0, 1):
        if w[level] == 0:
            continue
        name = ("patient_ids", "trial_ids")[level]
        level_ids = ids[level]
        assert level_ids is not None  # checked above: required with a weight > 0
        terms, pairs = _identity(x1, x2, level_ids, name, float(temperature), group)
        if pairs:
            rows = rows + terms * (w[level] / (2 * pairs))
    if reduction == "none":
        return reduce(rows, "none", group=group)
    return reduce(rows, "sum", group=group)


class COMET(Objective, functional=comet):
    """COMET: contrastive losses at four levels of medical time series, summed with weights.

    Two augmented views ``z1``, ``z2`` ``(B, T, C)`` of a batch of samples (an encoder's
    per-timestamp outputs) are contrasted at four data levels:

    * observation: within each sample, the other view's same timestamp against the sample's
      other timestamps (raw dot products, no temperature; TS2Vec's temporal loss);
    * sample: at each timestamp, the other view of the same sample against every other
      sample's views (raw dot products; TS2Vec's instance loss);
    * trial and patient: cosine / ``temperature`` of whole views (normalised along time, then
      flattened); samples with the same trial (patient) id are positives, pair by pair, the
      same sample's other view is not a positive but is in every denominator.

    The observation and sample levels are averaged over a hierarchy of time resolutions
    (max-pooling time by 2 while ``T > 1``) when ``hierarchical`` (the official training
    loop does so for these two levels, not for trial and patient). The official code draws a
    fresh pair of augmented views for every level; pass the same views to four calls with
    one-hot ``weights`` to reproduce that.

    With ``u`` the similarities of the level and ``CE(a -> p) = -log softmax(u_a.)_p``::

        L_obs    = mean_depth mean_{b, t, view} CE((b, t) -> other view's (b, t))
                    over the 2T - 1 other timestamps of sample b
        L_sample = mean_depth mean_{t, b, view} CE((b, t) -> other view's (b, t))
                    over the 2B - 1 other views at timestamp t
        L_id     = 1/2 [ mean_{i < j, id_i = id_j} -log(e^{u_ij} / sum_k e^{u_ik})
                       + mean_{i > j, id_i = id_j} -log(e^{u_ij} / sum_k e^{u_kj}) ]
                    (u_ij = cos(z1_i, z2_j) / temperature; 0 without a same-id pair)
        loss = w_patient L_patient + w_trial L_trial + w_sample L_sample + w_obs L_obs

    Args:
        weights (4 floats): ``(patient, trial, sample, observation)`` level weights, default
            0.25 each (the official ``fit`` default); a level with weight 0 is skipped and
            needs no ids.
        hierarchical (bool): average the sample and observation levels over the time
            hierarchy (default ``True``, as the official training loop).
        temperature (float): temperature of the trial and patient levels, default 0.1 (fixed
            in the official code).
        reduction (str): ``"mean"`` (default: the loss above) or ``"none"``: per-sample shares
            ``(B,)`` that sum to it (the sample's timestamps at the observation and sample
            levels; its upper-triangle pairs' row terms and lower-triangle pairs' column terms
            at the id levels).

    Inputs:
        - ``z1``: ``(B, T, C)`` float; view 1 (encoder output per timestamp).
        - ``z2``: ``(B, T, C)`` float; view 2 of the same samples.
        - ``patient_ids``: ``(B,)`` integer (optional when the patient weight is 0).
        - ``trial_ids``: ``(B,)`` integer (optional when the trial weight is 0).
        - returns a scalar, or ``(B,)`` with ``reduction="none"``.

    Example::

        import torch
        from contrastkit.losses.dense import COMET

        z1, z2 = torch.randn(6, 8, 16), torch.randn(6, 8, 16)
        patients, trials = torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([0, 0, 1, 2, 2, 3])
        loss = COMET()(z1, z2, patients, trials)

    See also:
        :class:`TemporalContrast` (time-offset positives), :class:`NTXent`, :class:`SupCon`.

    References:
        Wang, Ning, Zhang, Pan, et al., "Contrast Everything: A Hierarchical Contrastive
        Framework for Medical Time-Series", NeurIPS 2023, arXiv:2310.14017; Yue et al.,
        "TS2Vec: Towards Universal Representation of Time Series", arXiv:2106.10466.
    """
