"""Training one run with several processes (``torchrun --nproc_per_node N -m contrastkit train``).

Each process holds a replica of the model and embeds its contiguous share of every global batch
(``batch_size / N`` rows; ``mini_batch`` GradCache chunks apply per process). The loss is the
*exact* loss of the global batch: contrastkit's objectives run under the world process group
(:mod:`contrastkit.distributed`, gradient convention ``"ddp"``: each process's embeddings
receive ``N`` times their exact gradient), and after the backward pass the parameter gradients
are averaged over the processes, as ``DistributedDataParallel`` does. So every process takes
the optimiser step of one process training on the whole batch (same loss, same gradients up to
floating-point summation order), and the replicas stay identical.

Averaging is done once per step on one flattened buffer instead of through a
``DistributedDataParallel`` wrapper, because a GradCache step runs the encoder twice (once
without gradients, once replaying chunks inside the backward pass), which DDP's hooks do not
support. Process 0 (the lead) writes the run directory: logs, checkpoints, snapshots, the
evaluation and the report; the others write nothing.
"""

from __future__ import annotations

import os
from typing import Iterable, Optional

import torch
import torch.distributed as dist

__all__ = ["DataParallel"]


class DataParallel:
    """This process's place in a multi-process run (``world == 1``: a plain run)."""

    def __init__(
        self, rank: int = 0, world: int = 1, device: Optional[torch.device] = None, owns=False
    ):
        self.rank, self.world, self.device, self._owns = rank, world, device, owns

    @classmethod
    def from_environment(cls, cfg) -> "DataParallel":
        """From ``torchrun``'s environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_*``)
        or an already initialised default process group; a plain run otherwise. The process
        group is created here when needed (``gloo`` on the CPU, ``nccl`` on CUDA: each process
        uses ``cuda:LOCAL_RANK``)."""
        initialised = dist.is_available() and dist.is_initialized()
        world = dist.get_world_size() if initialised else int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if cfg.batch_size % world:
            raise ValueError(
                f"config field 'batch_size' ({cfg.batch_size}) must be a multiple of the "
                f"{world} training processes"
            )
        cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
        device = None
        if cuda:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        owns = False
        if not initialised:
            dist.init_process_group("nccl" if cuda else "gloo")
            owns = True
        return cls(dist.get_rank(), dist.get_world_size(), device, owns)

    def shard(self, idx: torch.Tensor) -> torch.Tensor:
        """This process's contiguous share of a global batch of indices (rank-major, as the
        distributed objectives gather rows)."""
        if self.world == 1:
            return idx
        per = idx.shape[0] // self.world
        return idx[self.rank * per : (self.rank + 1) * per]

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Average the parameter gradients over the processes (one all-reduce of a flat
        buffer); a parameter without a gradient on this process counts as zero."""
        if self.world == 1:
            return
        params = list(params)
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p in params:
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        """Destroy the process group if this object created it."""
        if self._owns and dist.is_initialized():
            dist.destroy_process_group()
            self._owns = False
