"""GPU backend of the engine: Triton kernels for the canonical softmax cross-entropy rows.

Importing this package needs only torch; the kernels (and Triton) are imported on first use.
``backend="auto"`` on CUDA tensors routes every spec :func:`covers` accepts here (see
``docs/gpu.md``); the rest stays on the torch tiled path.
"""

from __future__ import annotations

from .coverage import MAX_INDEX, EmbeddingSoftTargets, available, covers, enabled

__all__ = [
    "MAX_INDEX",
    "EmbeddingSoftTargets",
    "available",
    "contrast_triton",
    "covers",
    "enabled",
    "maybe_contrast",
]


def contrast_triton(*args, **kwargs):
    """See :func:`contrastkit.engine.gpu.backend.contrast_triton` (imports Triton)."""
    from .backend import contrast_triton as impl

    return impl(*args, **kwargs)


def maybe_contrast(anchors, candidates, spec, kappa, reduce: bool):
    """The engine's hook: the Triton result, or ``None`` when the kernels do not apply
    (Triton missing, ``CONTRASTKIT_TRITON=0``, or a spec/dtype they do not cover)."""
    if not enabled() or not covers(spec, anchors, candidates, kappa)[0]:
        return None
    return contrast_triton(anchors, candidates, spec, kappa, reduce=reduce)
