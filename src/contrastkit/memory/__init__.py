"""Memories and momentum encoders.

``Queue`` (MoCo FIFO of keys), ``MomentumEncoder`` (EMA copy, constant or BYOL cosine momentum),
``CrossBatchMemory`` (XBM), ``DynamicClusteredMemory`` (BECLR DyCE) and
``optimal_transport_align`` (BECLR OpTA, inference). Every stored tensor is detached and lives
in a registered buffer, so it is saved and restored with the module's ``state_dict``.
"""

from .beclr import (
    DynamicClusteredMemory,
    OpTAResult,
    optimal_transport_align,
    sinkhorn_equipartition,
)
from .momentum import MomentumEncoder, momentum_schedule, momentum_update
from .queue import Queue
from .xbm import CrossBatchMemory, MemoryBatch

__all__ = [
    "Queue",
    "MomentumEncoder",
    "momentum_update",
    "momentum_schedule",
    "CrossBatchMemory",
    "MemoryBatch",
    "DynamicClusteredMemory",
    "sinkhorn_equipartition",
    "optimal_transport_align",
    "OpTAResult",
]
