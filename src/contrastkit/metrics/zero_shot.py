"""Zero-shot classification from class prototypes or prompt embeddings (CLIP,
Radford et al. 2021, open_clip ``build_zero_shot_classifier``)."""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check_compatible, check_embeddings, check_labels, normalize

__all__ = ["zero_shot_classifier", "zero_shot_accuracy"]


@torch.no_grad()
def zero_shot_classifier(text_embeddings: Tensor) -> Tensor:
    """Class weight matrix ``(C, d)`` from prompt embeddings ``(C, T, d)`` (class x template).

    Each prompt embedding is L2-normalised, averaged over the ``T`` templates, and the mean is
    **re-normalised** (CLIP prompt ensembling). A ``(C, d)`` input is treated as ``T = 1``
    (class prototypes): the result is just the normalised prototypes.
    """
    check_embeddings("text_embeddings", text_embeddings, ndim=(2, 3))
    t = text_embeddings if text_embeddings.dim() == 3 else text_embeddings[:, None, :]
    if t.shape[1] == 0:
        raise ValueError(f"text_embeddings has no templates, shape {tuple(text_embeddings.shape)}")
    return normalize(normalize(t).mean(dim=1))


@torch.no_grad()
def zero_shot_accuracy(
    image_features: Tensor,
    class_embeddings: Tensor,
    labels: Tensor,
    top: int = 1,
    logit_scale: float = 100.0,
) -> float:
    """Zero-shot top-``top`` accuracy in percent.

    ``class_embeddings`` is ``(C, d)`` prototypes or ``(C, T, d)`` prompt embeddings, turned into
    weights ``W`` by :func:`zero_shot_classifier`; images are L2-normalised;
    ``logits = logit_scale * image @ W^T`` (the scale, 100 in CLIP, does not change the ranking);
    a sample is correct when its label is among the ``top`` largest logits (ties: lower class index
    first, as ``torch.topk`` on CPU).
    """
    check_embeddings("image_features", image_features)
    w = zero_shot_classifier(class_embeddings)
    check_compatible("image_features", image_features, "class_embeddings", w)
    labels = check_labels("labels", labels, image_features.shape[0], image_features)
    n_cls = w.shape[0]
    if (labels < 0).any() or (labels >= n_cls).any():
        raise ValueError(
            f"labels must be class ids in [0, {n_cls}) for class_embeddings of shape "
            f"{tuple(class_embeddings.shape)}"
        )
    if not isinstance(top, int) or not 1 <= top <= n_cls:
        raise ValueError(f"top must be an int in [1, {n_cls}] (number of classes), got {top!r}")
    logits = logit_scale * normalize(image_features) @ w.T
    pred = logits.topk(top, dim=1).indices
    return 100.0 * float((pred == labels[:, None]).any(dim=1).double().mean())
