"""A plain PyTorch training loop with a contrastkit objective (and, optionally, GradCache).

Two towers embed paired views of synthetic data (each view is a fixed random mixing of a shared
latent plus noise); CLIP, whose logit scale is a learnable parameter, pulls each pair
together. Nothing beyond torch and contrastkit is needed:

    python examples/plain_pytorch.py                      # ordinary step
    python examples/plain_pytorch.py --chunk-size 64      # GradCache: encoder memory ~64 rows
    python examples/plain_pytorch.py --steps 5 --batch 32 # a quick smoke run

The step is the usual ``zero_grad / loss.backward() / step``. With ``--chunk-size`` the
embeddings come from :func:`contrastkit.gradcache.cached_embed`: the forward keeps no encoder
activations and ``loss.backward()`` re-runs the towers chunk by chunk, giving the same gradients.
The last line printed is ``loss FIRST -> LAST`` (the mean over the first and last few steps).
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from contrastkit import CLIP
from contrastkit.gradcache import cached_embed


def tower(d_in: int, d_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, 128), nn.Dropout(0.1), nn.GELU(), nn.Linear(128, d_out))


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dim", type=int, default=32, help="embedding dimension")
    p.add_argument("--chunk-size", type=int, default=None, help="GradCache chunk (rows)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    latent, d_a, d_b = 16, 48, 40
    mix_a, mix_b = torch.randn(latent, d_a), torch.randn(latent, d_b)
    image_tower, text_tower = tower(d_a, args.dim), tower(d_b, args.dim)
    loss_fn = CLIP(init_temperature=0.1)  # learnable logit scale, clamped at 100
    params = [*image_tower.parameters(), *text_tower.parameters(), *loss_fn.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr)

    def embed(encoder, x):
        if args.chunk_size is None:
            return encoder(x)
        return cached_embed(encoder, x, args.chunk_size)  # GradCache (same gradients)

    history = []
    for _ in range(args.steps):
        z = torch.randn(args.batch, latent)  # a fresh batch of paired views
        a = z @ mix_a + 0.3 * torch.randn(args.batch, d_a)
        b = z @ mix_b + 0.3 * torch.randn(args.batch, d_b)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(embed(image_tower, a), embed(text_tower, b))
        loss.backward()
        opt.step()
        history.append(loss.item())

    k = max(1, min(5, len(history) // 2))
    first, last = sum(history[:k]) / k, sum(history[-k:]) / k
    print(f"temperature {float(loss_fn.logit_scale.detach().neg().exp()):.4f}")
    print(f"loss {first:.4f} -> {last:.4f}")
    return last


if __name__ == "__main__":
    main()
