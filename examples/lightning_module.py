"""A LightningModule with a contrastkit objective (and, optionally, GradCache).

The same two-tower CLIP setup as ``plain_pytorch.py``, as a LightningModule: the objective is a
submodule (so its learnable logit scale is in ``self.parameters()`` and in the optimiser),
``training_step`` returns the loss and Lightning's automatic optimisation calls ``backward``.
GradCache needs nothing special: :func:`contrastkit.gradcache.cached_embed` returns embeddings on
the graph, and the ``backward`` Lightning calls replays the towers chunk by chunk.

    python examples/lightning_module.py
    python examples/lightning_module.py --chunk-size 64 --steps 5 --batch 32

Needs ``lightning`` (or the older ``pytorch_lightning`` package). The last line printed is
``loss FIRST -> LAST`` (the mean over the first and last few steps).
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

try:
    import lightning as L
except ImportError:  # the package's older name
    import pytorch_lightning as L

from contrastkit import CLIP
from contrastkit.gradcache import cached_embed


def tower(d_in: int, d_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, 128), nn.Dropout(0.1), nn.GELU(), nn.Linear(128, d_out))


class CLIPModule(L.LightningModule):
    def __init__(self, d_a: int, d_b: int, dim: int = 32, lr: float = 3e-3, chunk_size=None):
        super().__init__()
        self.image_tower, self.text_tower = tower(d_a, dim), tower(d_b, dim)
        self.loss_fn = CLIP(init_temperature=0.1)  # learnable logit scale
        self.lr, self.chunk_size = lr, chunk_size
        self.history: list[float] = []

    def embed(self, encoder, x):
        if self.chunk_size is None:
            return encoder(x)
        return cached_embed(encoder, x, self.chunk_size)  # GradCache (same gradients)

    def training_step(self, batch, batch_idx):
        a, b = batch
        loss = self.loss_fn(self.embed(self.image_tower, a), self.embed(self.text_tower, b))
        self.log("train_loss", loss)
        self.history.append(loss.item())
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


def paired_views(n: int, d_a: int, d_b: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 16, generator=g)
    mix_a, mix_b = torch.randn(16, d_a, generator=g), torch.randn(16, d_b, generator=g)
    a = z @ mix_a + 0.3 * torch.randn(n, d_a, generator=g)
    b = z @ mix_b + 0.3 * torch.randn(n, d_b, generator=g)
    return TensorDataset(a, b)


def main(argv=None) -> float:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--chunk-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    L.seed_everything(args.seed, verbose=False)
    d_a, d_b = 48, 40
    data = paired_views(args.batch * 8, d_a, d_b, args.seed)
    loader = DataLoader(data, batch_size=args.batch, shuffle=True, drop_last=True)
    module = CLIPModule(d_a, d_b, args.dim, chunk_size=args.chunk_size)
    trainer = L.Trainer(
        max_steps=args.steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, loader)

    h = module.history
    k = max(1, min(5, len(h) // 2))
    first, last = sum(h[:k]) / k, sum(h[-k:]) / k
    print(f"temperature {float(module.loss_fn.logit_scale.detach().neg().exp()):.4f}")
    print(f"loss {first:.4f} -> {last:.4f}")
    return last


if __name__ == "__main__":
    main()
