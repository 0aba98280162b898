"""Exact CLIP loss over the global batch with DDP, launched by torchrun (CPU, gloo).

    torchrun --standalone --nproc-per-node 2 examples/distributed_torchrun.py [--check]

Every rank embeds its shard of the batch; ``CLIP`` sees that torch.distributed is
initialised and computes the loss of the *global* batch (the same value on every rank), with
the default ``gradients="ddp"`` convention: DDP's average of the encoder gradients and the
logit scale's gradient are those of one process on the whole batch. ``--check`` re-runs the
same steps in one process on rank 0 and compares the parameters.
"""

from __future__ import annotations

import copy
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import contrastkit as ck
from contrastkit import distributed as ckd

PER_RANK, STEPS = 8, 3


def batches(world: int):
    g = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        x = torch.randn(PER_RANK * world, 16, generator=g)
        yield x, x + 0.3 * torch.randn(x.shape, generator=g)


def train(model, loss_fn, world: int, rank: int, encoder):
    opt = torch.optim.SGD(list(model.parameters()) + list(loss_fn.parameters()), lr=0.05)
    losses = []
    for x, y in batches(world):
        if rank >= 0:  # this rank's shard
            x, y = x.chunk(world)[rank], y.chunk(world)[rank]
        emb = encoder(torch.cat([x, y]))  # one forward per step (DDP)
        loss = loss_fn(*emb.chunk(2))  # the global mean, the same on every rank
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def main() -> int:
    dist.init_process_group("gloo")  # torchrun sets MASTER_ADDR, RANK, WORLD_SIZE
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    loss_fn = ck.CLIP()
    ref_model, ref_loss = copy.deepcopy(model), copy.deepcopy(loss_fn)
    losses = train(model, loss_fn, world, rank, DDP(model))
    status = 0
    if rank == 0:
        print("global-batch losses:", " ".join(f"{v:.6f}" for v in losses))
        if "--check" in sys.argv:
            with ckd.local():  # one process, the whole batch
                want = train(ref_model, ref_loss, world, -1, ref_model)
            params = list(model.parameters()) + list(loss_fn.parameters())
            ref = list(ref_model.parameters()) + list(ref_loss.parameters())
            diff = max(float((p - q).detach().abs().max()) for p, q in zip(params, ref))
            loss_diff = max(abs(a - b) for a, b in zip(losses, want))
            ok = diff < 1e-5 and loss_diff < 1e-5
            print(f"check: max parameter difference {diff:.2e}, loss difference {loss_diff:.2e}")
            print("check ok" if ok else "check FAILED")
            status = 0 if ok else 1
    dist.barrier()  # every rank leaves together (rank 0 may still be checking)
    dist.destroy_process_group()
    return status


if __name__ == "__main__":
    raise SystemExit(main())
