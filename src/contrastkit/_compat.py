"""Environment workarounds that keep optional integrations importable.

PyPI's torchvision wheels are CUDA builds; next to a CPU-only torch their C++ extension cannot
load and ``import torchvision`` dies with ``RuntimeError: operator torchvision::nms does not
exist`` (its meta registrations need the operator schemas). transformers imports torchvision
when it is installed, so the text recipe would fail although it never runs a torchvision
operator. :func:`ensure_torchvision_importable` defines the missing schemas (no kernels) with
``torch.library`` and retries; when torchvision loads normally it does nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import warnings

import torch

_SCHEMAS = {
    "nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_MISSING = re.compile(r"torchvision::(\w+)")
_LIB = None  # keeps the schema registrations alive


def _defined(op: str) -> bool:
    try:
        getattr(torch.ops.torchvision, op)
    except (AttributeError, RuntimeError):
        return False
    return True


def ensure_torchvision_importable() -> bool:
    """True when torchvision is importable afterwards (False if absent or still broken)."""
    global _LIB
    if "torchvision" in sys.modules:
        return True
    if importlib.util.find_spec("torchvision") is None:
        return False
    for _ in range(len(_SCHEMAS) + 1):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importlib.import_module("torchvision")
            return True
        except RuntimeError as exc:
            missing = _MISSING.search(str(exc))
            if not missing or missing.group(1) not in _SCHEMAS or _defined(missing.group(1)):
                return False
            for name in [m for m in sys.modules if m.split(".")[0] == "torchvision"]:
                del sys.modules[name]
            if _LIB is None:
                _LIB = torch.library.Library("torchvision", "FRAGMENT")
            for op, schema in _SCHEMAS.items():
                if not _defined(op):
                    _LIB.define(op + schema)
    return False
