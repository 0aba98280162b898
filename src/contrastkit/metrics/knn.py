"""Weighted k-NN classifier accuracy : InstDisc (Wu et al. 2018), DINO (Caron et al.)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._checks import (
    check_compatible,
    check_embeddings,
    check_k,
    check_labels,
    check_positive,
    normalize,
)

__all__ = ["knn_accuracy"]


@torch.no_grad()
def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    k: int = 20,
    temperature: float = 0.07,
    top: int = 1,
    num_classes: Optional[int] = None,
    chunk_size: int = 1024,
) -> float:
    """Weighted k-NN accuracy in percent (DINO ``eval_knn.knn_classifier``; InstDisc ``kNN``).

    Train and test features are L2-normalised; for each test row the ``k`` most similar train
    rows (cosine, sorted descending by ``torch.topk``) vote with weight ``exp(sim / T)``;
    class score = sum of the weights of its neighbours; a test row is correct when its label is
    among the ``top`` highest class scores (``top=1``: argmax). Defaults: DINO reports
    ``k = 20``, InstDisc uses ``k = 200``; ``T = 0.07`` for both. Train and test are separate
    sets (the standard protocol); nothing is excluded.
    """
    check_embeddings("train_features", train_features)
    check_embeddings("test_features", test_features)
    check_compatible("train_features", train_features, "test_features", test_features)
    n_train, n_test = train_features.shape[0], test_features.shape[0]
    train_labels = check_labels("train_labels", train_labels, n_train, train_features)
    test_labels = check_labels("test_labels", test_labels, n_test, test_features)
    check_k("k", k, n_train, "train_features", train_features.shape)
    check_positive("temperature", temperature)
    if (train_labels < 0).any() or (test_labels < 0).any():
        raise ValueError("train_labels and test_labels must be non-negative class ids")
    needed = int(max(train_labels.max(), test_labels.max())) + 1
    if num_classes is None:
        num_classes = needed
    elif num_classes < needed:
        raise ValueError(f"num_classes={num_classes} but the labels contain class {needed - 1}")
    if not isinstance(top, int) or not 1 <= top <= num_classes:
        raise ValueError(f"top must be an int in [1, num_classes={num_classes}], got {top!r}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")

    train = normalize(train_features.float())
    test = normalize(test_features.float())
    correct = 0
    for start in range(0, n_test, chunk_size):
        q = test[start : start + chunk_size]
        sims, idx = (q @ train.T).topk(k, dim=1, largest=True, sorted=True)
        weights = (sims / temperature).exp()
        scores = torch.zeros(q.shape[0], num_classes, dtype=weights.dtype, device=q.device)
        scores.scatter_add_(1, train_labels[idx], weights)
        pred = scores.topk(top, dim=1).indices
        correct += int((pred == test_labels[start : start + chunk_size, None]).any(dim=1).sum())
    return 100.0 * correct / n_test
