"""Plain dense references for SogCLR / iSogCLR, AMCL, CACR, focal InfoNCE and 1-to-K: each
objective written the obvious way on materialised matrices, independently of the engine."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _n(x):
    return F.normalize(x, dim=-1)


def gcl(h1, h2, u_old, tau, gamma, eps=1e-8):
    """One SogCLR step as written in the paper/LibAUC: returns (per-sample loss (B,), ubar of
    both directions (2, B), (1/(2B-2)) sum_neg omega s of both directions (2, B)).

    ``u_old`` (B,) the state at the batch indices; ``tau`` a float or (B,) per sample."""
    h1, h2 = _n(h1), _n(h2)
    B = h1.shape[0]
    tau = torch.as_tensor(tau, dtype=h1.dtype).expand(B)[:, None]
    losses, ubars, ces = [], [], []
    for a, b in ((h1, h2), (h2, h1)):
        logits = torch.cat([a @ b.T, a @ a.T], dim=1)  # positive at column i, self at B + i
        neg = torch.ones(B, 2 * B, dtype=torch.bool)
        neg[torch.arange(B), torch.arange(B)] = False
        neg[torch.arange(B), B + torch.arange(B)] = False
        E = torch.where(neg, torch.exp(logits / tau), torch.zeros_like(logits))
        ubar = (1 - gamma) * u_old[:, None] + gamma * E.sum(1, keepdim=True) / (2 * B - 2)
        omega = (E / ubar.clamp(min=eps)).detach()
        ce = (omega * torch.where(neg, logits, torch.zeros_like(logits))).sum(1) / (2 * B - 2)
        losses.append(-logits[torch.arange(B), torch.arange(B)] + ce)
        ubars.append(ubar[:, 0].detach())
        ces.append(ce.detach())
    return losses[0] + losses[1], torch.stack(ubars), torch.stack(ces)


def focal_info_nce(q, cands, temperature, gamma, detach_weight=False):
    logits = _n(q) @ _n(cands).T / temperature
    logp = torch.log_softmax(logits, dim=1)[torch.arange(q.shape[0]), torch.arange(q.shape[0])]
    w = (1 - torch.exp(logp)) ** gamma
    if detach_weight:
        w = w.detach()
    return -w * logp


def one_to_k(v, t, temperature, divide_by=None):
    v, t = _n(v), _n(t)
    B = v.shape[0]
    K = t.shape[0] // B
    U = v @ t.T / temperature
    lsm = torch.log_softmax(U, dim=1)
    i2t = torch.stack([-lsm[i, K * i : K * i + K].sum() for i in range(B)])
    t2i = F.cross_entropy(U.T, torch.arange(B * K) // K, reduction="none")
    return (i2t.mean() + t2i.mean()) / 2 / (K if divide_by is None else divide_by)


def cacr(
    views,
    alpha=1.0,
    beta=1.0,
    attraction_scale=1.0,
    repulsion_scale=0.9,
    weighting="full",
    debiased=False,
    tau_plus=0.1,
):
    """The official small-scale losses (our_loss1 + our_loss2), squared distances of differences."""
    zs = [_n(v) for v in views]
    V, N = len(zs), zs[0].shape[0]
    att = 0.0
    for x in range(V):
        others = torch.stack([zs[v] for v in range(V) if v != x])  # (V-1, N, d)
        d2 = (zs[x][None] - others).norm(dim=-1).pow(2).T  # (N, V-1)
        if weighting in ("without_w1", "none"):
            att = att + (alpha * d2).mean()
        else:
            att = att + (alpha * d2 * torch.softmax(attraction_scale * d2, dim=1)).sum(1).mean()
    att = att / V
    rep, count = 0.0, 0
    off = ~torch.eye(N, dtype=torch.bool)
    for x in range(V):
        for y in range(x + 1, V):
            d2 = (zs[x][:, None] - zs[y][None]).norm(dim=-1).pow(2)[off].view(N, N - 1)
            cost = -beta * d2
            if weighting in ("without_w2", "none"):
                term = cost.mean()
            else:
                rows = (cost * torch.softmax(-repulsion_scale * d2, dim=1)).sum(1)
                if debiased:
                    pos = (zs[x] - zs[y]).norm(dim=-1).pow(2)
                    rows = (-tau_plus * pos + rows) / (1 - tau_plus)
                term = rows.mean()
            rep = rep + term
            count += 1
    return att + rep / count


def amcl(z1, z2, temperature_fn, beta, topk, omega_dim=None):
    """Dense AMCL: full similarity matrix, masked top-k, the same per-row formula."""
    if z1.dim() == 2:
        z1, z2 = z1[:, None], z2[:, None]
    N, C, d = z1.shape
    dim = d if omega_dim is None else omega_dim
    total = 0.0
    for c in range(C):
        Z = _n(torch.cat([z1[:, c], z2[:, c]]))
        S = Z @ Z.T
        part = (torch.arange(2 * N) + N) % (2 * N)
        mask = torch.eye(2 * N, dtype=torch.bool)
        mask[torch.arange(2 * N), part] = True
        vals, idx = S.masked_fill(mask, float("-inf")).topk(topk, dim=1)
        tp = temperature_fn(c, Z, Z[part])
        tn = torch.stack([temperature_fn(c, Z, Z[idx[:, k]]) for k in range(topk)], dim=1)

        def om(t):
            return 0.5 * dim * torch.log(t) + 1 / t

        rows = -S[torch.arange(2 * N), part] / tp + (vals / tn).mean(1)
        rows = rows + beta * om(tp) - beta * om(tn).mean(1)
        total = total + rows.mean()
    return total


def gcl_bimodal(img, txt, states, tau_img, tau_txt, gamma, rho=0.0, eps=1e-20):
    """One bimodal SogCLR step (LibAUC GCLoss_v2 written out): ``states`` (u_img, b_img, u_txt,
    b_txt) at the batch indices; returns per-pair loss (B,), new states and iSogCLR gradients."""
    B = img.shape[0]
    S = img @ txt.T
    out, new, grads = 0.0, [], []
    for S_dir, tau, u_old, b_old in (
        (S, tau_img, states[0], states[1]),
        (S.T, tau_txt, states[2], states[3]),
    ):
        tau = torch.as_tensor(tau, dtype=S.dtype).expand(B)[:, None]
        logits = S_dir - S_dir.diagonal()[:, None]
        ld = (logits / tau).detach()
        b = torch.maximum(ld.max(dim=1).values, b_old)
        neg = ~torch.eye(B, dtype=torch.bool)
        e = torch.where(neg, torch.exp(ld - b[:, None]), torch.zeros_like(ld))
        u = (1 - gamma) * u_old * torch.exp(b_old - b) + gamma * e.sum(1) / (B - 1)
        u = u.clamp(min=eps)
        p = (e / u[:, None]).detach()
        out = out + (p * logits).sum(1) / 2
        grads.append(torch.log(u) + rho + b - (p * ld).sum(1) / (B - 1))
        new += [u.detach(), b.detach()]
    return out, new, grads
