"""Peer libraries that ``contrastkit bench`` compares against, imported as installed packages.

Nothing here reads files of a source checkout: a peer is ``import``-ed from the environment
(``pip install 'contrastkit[bench]'`` installs them all), and a missing or broken one raises
:class:`PeerMissing` whose message says what to install.

torchvision: the PyPI torchvision wheels are CUDA builds. Next to a CPU-only torch their C++
extension does not load, and ``import torchvision`` then fails with ``RuntimeError: operator
torchvision::nms does not exist``: its Python side registers fake kernels for ``nms`` and
``qnms`` at import time. open_clip and transformers (hence sentence-transformers) import
torchvision. :func:`repair_torchvision` handles exactly that failure. It declares the two
missing operator *schemas*, with no kernels, then retries the import. The bench's losses never
call a torchvision operator. The repair changes torch's operator registry for the rest of the
process, so only the bench's worker processes call it: each runs one (method, N) and exits.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Optional

#: the optional-dependency group of pyproject.toml that installs every peer
EXTRA = "bench"


@dataclass(frozen=True)
class Peer:
    module: str  # import name
    package: str  # pip name


#: bench method -> the peer it runs
PEERS = {
    "st-cached-mnrl": Peer("sentence_transformers", "sentence-transformers"),
    "open-clip": Peer("open_clip", "open-clip-torch"),
}


class PeerMissing(Exception):
    """A peer library cannot be imported; the message says why and what to install."""


def install_hint(peer: Peer) -> str:
    return f"pip install 'contrastkit[{EXTRA}]' (or: pip install {peer.package})"


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_reason(method: str) -> Optional[str]:
    """Why ``method``'s peer is not installed (with the install command), or ``None``."""
    peer = PEERS.get(method)
    if peer is None or installed(peer.module):
        return None
    return f"{peer.package} is not installed: {install_hint(peer)}"


# --------------------------------------------------------------------------- torchvision

# operators torchvision's Python side looks up at import time, with their schemas (torchvision
# 0.2x, csrc/ops/nms.cpp and csrc/ops/quantized/cpu/qnms_kernel.cpp)
_TV_SCHEMAS = {
    "nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_TV_MISSING = re.compile(r"operator torchvision::(\w+) does not exist")
_TV_LIBRARY: Any = None  # keeps the schema definitions registered while the process lives


def _drop_modules(prefix: str) -> None:
    for name in [m for m in sys.modules if m == prefix or m.startswith(prefix + ".")]:
        del sys.modules[name]


def _import_quietly(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(name)


def repair_torchvision() -> Optional[str]:
    """Make ``import torchvision`` work next to a CPU-only torch (see the module docstring).

    Returns ``None`` when torchvision imports (or is not installed: the peers then import
    without it, or fail with their own message), else the reason it does not.
    """
    global _TV_LIBRARY
    if not installed("torchvision"):
        return None
    import torch

    for _ in range(len(_TV_SCHEMAS) + 1):
        try:
            _import_quietly("torchvision")
            return None
        except Exception as exc:  # noqa: BLE001 - any failure is reported, not raised
            found = _TV_MISSING.search(str(exc))
            op = found.group(1) if found else None
            if op not in _TV_SCHEMAS:
                return f"torchvision does not import: {type(exc).__name__}: {exc}"[:300]
            try:
                getattr(torch.ops.torchvision, op)
                return f"torchvision does not import: {type(exc).__name__}: {exc}"[:300]
            except (AttributeError, RuntimeError):
                pass  # really missing: declare it
            _drop_modules("torchvision")
            if _TV_LIBRARY is None:
                _TV_LIBRARY = torch.library.Library("torchvision", "FRAGMENT")
            _TV_LIBRARY.define(op + _TV_SCHEMAS[op])
    return "torchvision does not import (operators still missing after declaring them)"


def _import_peer(method: str, module: str):
    peer = PEERS[method]
    reason = missing_reason(method)
    if reason:
        raise PeerMissing(reason)
    tv = repair_torchvision()
    try:
        return _import_quietly(module)
    except Exception as exc:  # noqa: BLE001 - a broken install is a skip, with the cause
        why = f"{peer.package} is installed but `import {module}` failed: "
        why += f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
        if tv:
            why += f" ({tv}; install a torchvision build that matches torch)"
        raise PeerMissing(why[:400]) from None


# --------------------------------------------------------------------------- accessors


def open_clip_clip_loss():
    """open_clip's ``ClipLoss`` class: ``ClipLoss()(image, text, logit_scale)``, features used
    as given (normalise them first), ``logit_scale`` the multiplier ``1 / temperature``."""
    return _import_peer("open-clip", "open_clip.loss").ClipLoss


def st_cached_mnrl(**kwargs):
    """A sentence-transformers ``CachedMultipleNegativesRankingLoss`` for raw embeddings.

    ``kwargs``: its options (``scale``, ``mini_batch_size``, ...). Its model is only stored
    (and its first module inspected), so a one-layer identity stands in; feed it embeddings
    with ``calculate_loss([[anchors], [positives]], None, with_backward=True)``.
    """
    import torch

    _import_peer("st-cached-mnrl", "sentence_transformers")
    # sentence-transformers >= 6 keeps the losses of SentenceTransformer models in a subpackage
    new_layout = installed("sentence_transformers.sentence_transformer")
    name = "sentence_transformer.losses" if new_layout else "losses"
    losses = _import_peer("st-cached-mnrl", f"sentence_transformers.{name}")
    cls = getattr(losses, "CachedMultipleNegativesRankingLoss", None)
    if cls is None:
        raise PeerMissing(
            "this sentence-transformers has no CachedMultipleNegativesRankingLoss: "
            f"pip install -U {PEERS['st-cached-mnrl'].package}"
        )
    return cls(torch.nn.Sequential(torch.nn.Identity()), **kwargs)
