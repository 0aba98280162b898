"""Linear probe on frozen features (small-data protocol; MoCo linear evaluation)."""

from __future__ import annotations

import torch
from torch import Tensor

from .._extras import require
from ._checks import check_compatible, check_embeddings, check_labels, normalize

__all__ = ["linear_probe_accuracy"]


@torch.no_grad()
def linear_probe_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    C: float = 1.0,
    max_iter: int = 1000,
    l2_normalize: bool = False,
    balanced: bool = False,
) -> float:
    """Linear-probe accuracy in percent, fixed small-data protocol.

    Frozen features (extracted once); ``StandardScaler`` fit on the train features only;
    multinomial scikit-learn ``LogisticRegression`` (L2 penalty, ``C = 1.0``, ``lbfgs``,
    ``max_iter = 1000``); accuracy on the test features. ``balanced=True`` reports balanced
    accuracy (class imbalance). ``l2_normalize=True`` L2-normalises before standardising.
    Linearly separable features give 100.
    """
    require("sklearn", "metrics", "contrastkit.metrics.linear_probe_accuracy")
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.preprocessing import StandardScaler

    check_embeddings("train_features", train_features)
    check_embeddings("test_features", test_features)
    check_compatible("train_features", train_features, "test_features", test_features)
    train_labels = check_labels(
        "train_labels", train_labels, train_features.shape[0], train_features
    )
    test_labels = check_labels("test_labels", test_labels, test_features.shape[0], test_features)
    if train_labels.unique().numel() < 2:
        raise ValueError(
            f"train_labels must contain at least 2 classes, got shape {tuple(train_labels.shape)}"
            f" with classes {train_labels.unique().tolist()}"
        )
    xtr, xte = train_features.double(), test_features.double()
    if l2_normalize:
        xtr, xte = normalize(xtr), normalize(xte)
    xtr, xte = xtr.cpu().numpy(), xte.cpu().numpy()
    ytr, yte = train_labels.cpu().numpy(), test_labels.cpu().numpy()
    scaler = StandardScaler().fit(xtr)
    clf = LogisticRegression(C=C, max_iter=max_iter, solver="lbfgs")
    clf.fit(scaler.transform(xtr), ytr)
    pred = clf.predict(scaler.transform(xte))
    if balanced:
        return 100.0 * float(balanced_accuracy_score(yte, pred))
    return 100.0 * float((pred == yte).mean())
