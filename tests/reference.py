"""Plain dense reference implementations: every objective written the obvious way, on the
materialised N x M logit matrix, independently of the engine (used as oracles)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NEG = float("-inf")


def _n(x, normalize=True):
    return F.normalize(x, dim=-1) if normalize else x


def info_nce(q, k, negatives=None, temperature=0.07, symmetric=False, normalize=True):
    q, k = _n(q, normalize), _n(k, normalize)
    N = q.shape[0]
    cands = k
    if negatives is not None and negatives.dim() == 2:
        cands = torch.cat([k, _n(negatives, normalize)])
    logits = q @ cands.T / temperature
    if negatives is not None and negatives.dim() == 3:
        priv = torch.einsum("nd,nhd->nh", q, _n(negatives, normalize)) / temperature
        logits = torch.cat([logits, priv], dim=1)
    rows = F.cross_entropy(logits, torch.arange(N), reduction="none")
    if not symmetric:
        return rows
    cols = F.cross_entropy((q @ k.T / temperature).T, torch.arange(N), reduction="none")
    return (rows + cols) / 2


def nt_xent(z1, z2, temperature=0.1):
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    n2 = z.shape[0]
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(n2, dtype=torch.bool), NEG)
    target = (torch.arange(n2) + n2 // 2) % n2
    return F.cross_entropy(logits, target, reduction="none")


def dcl(z1, z2, temperature=0.1, weights=None):
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    n2 = z.shape[0]
    logits = z @ z.T / temperature
    partner = (torch.arange(n2) + n2 // 2) % n2
    pos = logits[torch.arange(n2), partner]
    mask = torch.eye(n2, dtype=torch.bool)
    mask[torch.arange(n2), partner] = True
    neg = torch.logsumexp(logits.masked_fill(mask, NEG), dim=1)
    w = 1.0 if weights is None else weights
    return neg - w * pos


def dclw_weights(z1, z2, sigma=0.5, detach=True):
    s = (F.normalize(z1, dim=-1) * F.normalize(z2, dim=-1)).sum(-1)
    if detach:
        s = s.detach()
    w = 2 - z1.shape[0] * torch.softmax(s / sigma, dim=0)
    return torch.cat([w, w])


def debiased(z1, z2, temperature=0.5, tau_plus=0.1, beta=None):
    """Transcription of chingyaoc/DCL and joshr17/HCL main.py (criterion) in plain torch."""
    out = F.normalize(torch.cat([z1, z2]), dim=-1)
    B = z1.shape[0]
    neg = torch.exp(out @ out.T / temperature)
    mask = torch.ones(2 * B, 2 * B, dtype=torch.bool)
    for i in range(B):
        mask[i, i] = mask[i, i + B] = mask[i + B, i] = mask[i + B, i + B] = False
    neg = neg.masked_select(mask).view(2 * B, -1)
    pos = torch.exp((F.normalize(z1, dim=-1) * F.normalize(z2, dim=-1)).sum(-1) / temperature)
    pos = torch.cat([pos, pos])
    n_neg = 2 * B - 2
    if beta is None:
        ng_sum = neg.sum(-1)
    else:
        imp = (beta * neg.log()).exp()
        ng_sum = (imp * neg).sum(dim=-1) / imp.mean(dim=-1)
    ng = (-tau_plus * n_neg * pos + ng_sum) / (1 - tau_plus)
    ng = torch.clamp(ng, min=n_neg * math.e ** (-1 / temperature))
    return -torch.log(pos / (pos + ng))


def supcon(features, labels=None, temperature=0.1, base_temperature=None, mode="all"):
    """HobbitLong/SupContrast SupConLoss (L_out) in plain torch; returns per-anchor losses and
    the has-positive mask."""
    if features.dim() == 2:
        features = features[:, None]
    N, V = features.shape[:2]
    f = F.normalize(features, dim=-1).transpose(0, 1).reshape(N * V, -1)
    lab = torch.arange(N) if labels is None else labels
    lab = lab.repeat(V)
    anchors = f if mode == "all" else f[:N]
    na = anchors.shape[0]
    logits = anchors @ f.T / temperature
    self_mask = torch.zeros(na, N * V, dtype=torch.bool)
    self_mask[torch.arange(na), torch.arange(na)] = True
    pos_mask = (lab[:na, None] == lab[None, :]) & ~self_mask
    log_prob = logits - torch.logsumexp(logits.masked_fill(self_mask, NEG), dim=1, keepdim=True)
    n_pos = pos_mask.sum(1)
    mean_log_prob = (log_prob * pos_mask).sum(1) / n_pos.clamp(min=1)
    ratio = 1.0 if base_temperature is None else temperature / base_temperature
    return -ratio * mean_log_prob, n_pos > 0


def clip(x, y, scale):
    x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    logits = scale * x @ y.T
    lab = torch.arange(x.shape[0])
    return (F.cross_entropy(logits, lab) + F.cross_entropy(logits.T, lab)) / 2


def siglip(x, y, scale, bias):
    x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    z = scale * x @ y.T + bias
    labels = 2 * torch.eye(x.shape[0], dtype=z.dtype) - 1
    return -F.logsigmoid(labels * z).sum(1)  # per image; the loss is the mean


def cwcl(p, q, temperature, targets=None):
    p, q = F.normalize(p, dim=-1).detach(), F.normalize(q, dim=-1)
    t = F.normalize(p if targets is None else targets, dim=-1).detach()
    W = (t @ t.T + 1) / 2
    logits = p @ q.T / temperature
    pq = -((W / W.sum(1, keepdim=True)) * torch.log_softmax(logits, dim=1)).sum(1)
    qp = -((W / W.sum(0, keepdim=True)) * torch.log_softmax(logits, dim=0)).sum(0)
    return (pq + qp) / 2


def mnrl(a, p, *negs, scale=20.0):
    cands = torch.cat([p, *negs])
    logits = scale * F.normalize(a, dim=-1) @ F.normalize(cands, dim=-1).T
    return F.cross_entropy(logits, torch.arange(a.shape[0]), reduction="none")


def ref_info_nce(q, k, queue=None, extra=None, valid=None, weights=None, tau=0.07, in_batch=True):
    """Plain logits matrix and cross-entropy at column i; weights enter as log w."""
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    N, M = q.shape[0], k.shape[0]
    u = q @ k.T / tau
    logw = torch.zeros(N, M, dtype=q.dtype)
    if weights is not None:
        logw = torch.log(weights)
    if not in_batch:
        eye = torch.zeros(N, M, dtype=torch.bool)
        eye[torch.arange(N), torch.arange(N)] = True
        logw = logw.masked_fill(~eye, float("-inf"))
    parts = [u + logw]
    if queue is not None:
        parts.append(q @ F.normalize(queue, dim=-1).T / tau)
    if extra is not None:
        e = torch.einsum("nd,nhd->nh", q, F.normalize(extra, dim=-1)) / tau
        if valid is not None:
            e = e.masked_fill(~valid, float("-inf"))
        parts.append(e)
    logits = torch.cat(parts, 1)
    return torch.logsumexp(logits, 1) - u.diagonal()
