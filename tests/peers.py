"""Lazy, cached access to peer-library loss implementations used as test oracles.

Each accessor returns the peer object, or ``None`` when it cannot be imported; in
that case ``SKIP_REASONS[<accessor name>]`` holds a one-line reason, so a test can do::

    pml = peers.pml_losses()
    if pml is None:
        pytest.skip(peers.SKIP_REASONS["pml_losses"])

or simply ``peers.require("pml_losses")``, which skips (or returns the object).

The torchvision wheels on PyPI are CUDA builds; next to a CPU-only torch their C++
extension (``torchvision/_C.so``) cannot load, and ``import torchvision`` then dies
with ``RuntimeError: operator torchvision::nms does not exist`` because
``torchvision/_meta_registrations.py`` unconditionally calls
``torch.library.register_fake("torchvision::nms")`` (and ``qnms``).  lightly,
open_clip and transformers (hence sentence-transformers) all import torchvision.
``ensure_torchvision()`` works around this by defining the missing operator
*schemas* (no kernels) with ``torch.library`` and retrying the import.  Nothing in
these peers' loss code calls a torchvision operator, so the schemas are never run.
When torchvision's extension loads fine, nothing is defined.

Import-time warnings are silenced; nothing is printed.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re
import sys
import types
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

__all__ = [
    "SKIP_REASONS",
    "ensure_torchvision",
    "pml_losses",
    "lightly_losses",
    "open_clip_losses",
    "st_mnrl",
    "st_cached_mnrl",
    "require",
]

#: accessor name -> why it returned None (only set on failure).
SKIP_REASONS: dict[str, str] = {}

# Schemas of torchvision operators that torchvision's Python side touches at import
# time even when its C++ extension failed to load (torchvision 0.28:
# _meta_registrations.register_fake for nms and qnms).  Taken from
# torchvision/csrc/ops/{nms,quantized/cpu/qnms_kernel}.cpp.
_TORCHVISION_SCHEMAS: dict[str, str] = {
    "nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_MISSING_OP = re.compile(r"torchvision::(\w+)")

# Keeps the torch.library.Library holding the schema definitions alive: when it
# is garbage collected its registrations are removed again.
_TV_LIB: Any = None


@contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _short(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}"[:300]


def _fail(name: str, reason: str) -> None:
    SKIP_REASONS[name] = reason
    return None


def _purge(prefix: str) -> None:
    for mod in [m for m in sys.modules if m == prefix or m.startswith(prefix + ".")]:
        del sys.modules[mod]


def _has_tv_op(torch: Any, op: str) -> bool:
    try:
        getattr(torch.ops.torchvision, op)
    except (AttributeError, RuntimeError):
        return False
    return True


def _define_tv_schemas(torch: Any) -> list[str]:
    global _TV_LIB
    defined = []
    for op, schema in _TORCHVISION_SCHEMAS.items():
        if _has_tv_op(torch, op):
            continue
        if _TV_LIB is None:
            _TV_LIB = torch.library.Library("torchvision", "FRAGMENT")
        _TV_LIB.define(op + schema)
        defined.append(op)
    return defined


@functools.lru_cache(maxsize=None)
def ensure_torchvision() -> Optional[str]:
    """Make ``import torchvision`` succeed if at all possible.

    Returns None when torchvision is importable afterwards, else a reason string
    (including "torchvision is not installed"; sentence-transformers does not
    need torchvision, so its accessors ignore this result).
    """
    if not _installed("torchvision"):
        return "torchvision is not installed"
    import torch

    first_error: Optional[BaseException] = None
    for _ in range(len(_TORCHVISION_SCHEMAS) + 1):
        try:
            with _quiet():
                importlib.import_module("torchvision")
            return None
        except Exception as exc:  # noqa: BLE001 - any import failure is a skip reason
            first_error = first_error or exc
            missing = _MISSING_OP.search(str(exc))
            if not missing or missing.group(1) not in _TORCHVISION_SCHEMAS:
                break
            _purge("torchvision")
            if not _define_tv_schemas(torch):
                break
    reason = f"torchvision import failed: {_short(first_error)}"
    return reason


def _load_file_as_module(modname: str, path: Path) -> types.ModuleType:
    """Execute one source file as a standalone module (no package __init__)."""
    spec = importlib.util.spec_from_file_location(modname, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[modname] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[modname]
        raise
    return module


def _package_dir(package: str) -> Optional[Path]:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


# ---------------------------------------------------------------------------
# pytorch-metric-learning
# ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def pml_losses() -> Optional[types.ModuleType]:
    """``pytorch_metric_learning.losses`` (NTXentLoss, SupConLoss, ...).

    Call convention: ``loss(embeddings, labels)``; for SimCLR-style NT-Xent pass
    ``embeddings = cat([z1, z2])`` (2N, D) and ``labels = arange(N).repeat(2)``.
    """
    name = "pml_losses"
    if not _installed("pytorch_metric_learning"):
        return _fail(name, "pytorch-metric-learning is not installed")
    try:
        with _quiet():
            return importlib.import_module("pytorch_metric_learning.losses")
    except Exception as exc:  # noqa: BLE001
        return _fail(name, f"pytorch_metric_learning.losses import failed: {_short(exc)}")


# ---------------------------------------------------------------------------
# lightly
# ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def lightly_losses() -> Optional[types.SimpleNamespace]:
    """Namespace with lightly's ``NTXentLoss``, ``DCLLoss``, ``DCLWLoss`` (+ ``module``).

    Call convention: ``loss(out0, out1)`` with two (N, D) views.
    """
    name = "lightly_losses"
    if not _installed("lightly"):
        return _fail(name, "lightly is not installed")
    tv_problem = ensure_torchvision()
    try:
        with _quiet():
            mod = importlib.import_module("lightly.loss")
        return types.SimpleNamespace(
            NTXentLoss=mod.NTXentLoss, DCLLoss=mod.DCLLoss, DCLWLoss=mod.DCLWLoss, module=mod
        )
    except Exception as exc:  # noqa: BLE001
        err = exc
    # Fallback: run only the two loss files (their own imports still need
    # lightly.utils.dist and, for NTXentLoss, lightly.models -> torchvision).
    pkg = _package_dir("lightly")
    try:
        assert pkg is not None
        with _quiet():
            ntx = _load_file_as_module(
                "_peers_lightly_ntx_ent_loss", pkg / "loss" / "ntx_ent_loss.py"
            )
            dcl = _load_file_as_module("_peers_lightly_dcl_loss", pkg / "loss" / "dcl_loss.py")
        return types.SimpleNamespace(
            NTXentLoss=ntx.NTXentLoss, DCLLoss=dcl.DCLLoss, DCLWLoss=dcl.DCLWLoss, module=None
        )
    except Exception as exc2:  # noqa: BLE001
        extra = f" ({tv_problem})" if tv_problem else ""
        return _fail(
            name,
            f"lightly.loss import failed: {_short(err)}; direct file load: {_short(exc2)}{extra}",
        )


# ---------------------------------------------------------------------------
# open_clip
# ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def open_clip_losses() -> Optional[types.SimpleNamespace]:
    """Namespace with open_clip's ``ClipLoss`` and ``SigLipLoss`` (+ ``module``).

    Call convention: ``ClipLoss()(image_features, text_features, logit_scale)`` and
    ``SigLipLoss()(image_features, text_features, logit_scale, logit_bias)``; features
    are used as given (callers L2-normalise), ``logit_scale`` is the multiplier
    (``exp`` of the learnt log-scale), not its log.
    """
    name = "open_clip_losses"
    if not _installed("open_clip"):
        return _fail(name, "open_clip_torch is not installed")
    tv_problem = ensure_torchvision()
    try:
        with _quiet():
            mod = importlib.import_module("open_clip.loss")
        return types.SimpleNamespace(ClipLoss=mod.ClipLoss, SigLipLoss=mod.SigLipLoss, module=mod)
    except Exception as exc:  # noqa: BLE001
        err = exc
    # Fallback: open_clip/loss.py only needs torch, so run that file alone.
    _purge("open_clip")
    pkg = _package_dir("open_clip")
    try:
        assert pkg is not None
        with _quiet():
            mod = _load_file_as_module("_peers_open_clip_loss", pkg / "loss.py")
        return types.SimpleNamespace(ClipLoss=mod.ClipLoss, SigLipLoss=mod.SigLipLoss, module=mod)
    except Exception as exc2:  # noqa: BLE001
        extra = f" ({tv_problem})" if tv_problem else ""
        return _fail(
            name,
            f"open_clip.loss import failed: {_short(err)}; direct file load: {_short(exc2)}{extra}",
        )


# ---------------------------------------------------------------------------
# sentence-transformers
# ---------------------------------------------------------------------------
def _st_losses_module() -> types.ModuleType:
    # torchvision is optional for transformers, but a broken install breaks the
    # import of transformers.PreTrainedModel, so repair it first when present.
    ensure_torchvision()
    with _quiet():
        try:  # sentence-transformers >= 6 layout
            return importlib.import_module("sentence_transformers.sentence_transformer.losses")
        except ModuleNotFoundError:
            return importlib.import_module("sentence_transformers.losses")


def _placeholder_model() -> Any:
    # The losses keep ``model`` but never call it when fed embeddings directly.
    # CachedMultipleNegativesRankingLoss's constructor indexes ``model[0]``
    # (StaticEmbedding check), so a one-element Sequential is used.
    import torch

    return torch.nn.Sequential(torch.nn.Identity())


@functools.lru_cache(maxsize=None)
def st_mnrl() -> Optional[types.SimpleNamespace]:
    """sentence-transformers' MultipleNegativesRankingLoss and how to run it on embeddings.

    Found in sentence-transformers 6.2.0
    (sentence_transformers/sentence_transformer/losses/multiple_negatives_ranking.py):

    * ``MultipleNegativesRankingLoss(model, scale=20.0, similarity_fct=cos_sim,
      gather_across_devices=False, directions=("query_to_doc",), partition_mode="joint",
      hardness_mode=None, hardness_strength=0.0)``; ``temperature`` is a read-only
      property ``1/scale``.
    * ``forward(sentence_features, labels)`` embeds with the model and then calls
      ``compute_loss_from_embeddings(embeddings: list[Tensor], labels)``, where
      ``embeddings = [anchors (N, D), positives (N, D), *hard_negatives (N, D)]``;
      ``labels`` is unused (positive of anchor i is positives[i]).  ``model`` is
      only stored, so a placeholder works.
    * math: logits = scale * similarity_fct(anchors, cat(positives, negatives)),
      loss = mean_i [logsumexp_j logits_ij - logits_ii] (cross-entropy with
      in-batch negatives, mean over the N anchors; one direction by default).
      ``cos_sim`` L2-normalises both inputs itself.

    Returned namespace: ``MultipleNegativesRankingLoss`` (class), ``cos_sim``,
    ``dot_score`` (similarity functions), ``make(**kwargs)`` -> instance built with a
    placeholder model, and ``loss(anchors, positives, *negatives, **kwargs)`` ->
    scalar, via ``compute_loss_from_embeddings`` (or, for older releases without it,
    ``scale * similarity_fct`` + ``cross_entropy`` with ``arange`` targets).
    """
    name = "st_mnrl"
    if not _installed("sentence_transformers"):
        return _fail(name, "sentence-transformers is not installed")
    try:
        losses = _st_losses_module()
        cls = losses.MultipleNegativesRankingLoss
        with _quiet():
            util = importlib.import_module("sentence_transformers.util")
    except Exception as exc:  # noqa: BLE001
        return _fail(name, f"sentence_transformers import failed: {_short(exc)}")

    def make(**kwargs: Any) -> Any:
        return cls(_placeholder_model(), **kwargs)

    def loss(anchors: Any, positives: Any, *negatives: Any, **kwargs: Any) -> Any:
        inst = make(**kwargs)
        embeddings = [anchors, positives, *negatives]
        if hasattr(inst, "compute_loss_from_embeddings"):
            return inst.compute_loss_from_embeddings(embeddings, None)
        import torch

        scores = inst.similarity_fct(anchors, torch.cat(embeddings[1:])) * inst.scale
        target = torch.arange(len(scores), device=scores.device)
        return torch.nn.functional.cross_entropy(scores, target)

    return types.SimpleNamespace(
        MultipleNegativesRankingLoss=cls,
        cos_sim=util.cos_sim,
        dot_score=util.dot_score,
        make=make,
        loss=loss,
        module=losses,
    )


@functools.lru_cache(maxsize=None)
def st_cached_mnrl() -> Optional[types.SimpleNamespace]:
    """sentence-transformers' CachedMultipleNegativesRankingLoss (GradCache variant).

    Same hyper-parameters as MNRL plus ``mini_batch_size=32``,
    ``mini_batch_num_tokens=None``, ``show_progress_bar=False``.  On raw embeddings
    call ``calculate_loss(reps, labels=None, with_backward=False)`` where
    ``reps = [[anchor_chunk, ...], [positive_chunk, ...], ...]`` (one list of
    mini-batch chunks per column; chunks are concatenated).  The loss is the same
    value as MNRL, accumulated over ``mini_batch_size`` row chunks as
    ``chunk_mean * chunk_rows / N``.

    Returned namespace: ``CachedMultipleNegativesRankingLoss`` (class), ``make(**kw)``
    and ``loss(anchors, positives, *negatives, **kw)``.
    """
    name = "st_cached_mnrl"
    if not _installed("sentence_transformers"):
        return _fail(name, "sentence-transformers is not installed")
    try:
        losses = _st_losses_module()
    except Exception as exc:  # noqa: BLE001
        return _fail(name, f"sentence_transformers import failed: {_short(exc)}")
    cls = getattr(losses, "CachedMultipleNegativesRankingLoss", None)
    if cls is None:
        return _fail(name, "this sentence-transformers has no CachedMultipleNegativesRankingLoss")

    def make(**kwargs: Any) -> Any:
        return cls(_placeholder_model(), **kwargs)

    def loss(anchors: Any, positives: Any, *negatives: Any, **kwargs: Any) -> Any:
        inst = make(**kwargs)
        return inst.calculate_loss([[anchors], [positives], *[[n] for n in negatives]], None)

    return types.SimpleNamespace(
        CachedMultipleNegativesRankingLoss=cls, make=make, loss=loss, module=losses
    )


def require(accessor: str) -> Any:
    """Return ``<accessor>()`` or ``pytest.skip`` with its reason."""
    obj = globals()[accessor]()
    if obj is None:
        import pytest

        pytest.skip(SKIP_REASONS.get(accessor, f"{accessor} unavailable"))
    return obj
