"""Any contrastkit objective as a sentence-transformers loss.

sentence-transformers (6.x) losses are modules that hold the ``model`` and implement
``forward(sentence_features, labels)``: ``sentence_features`` is one tokenised dict per input
column of the dataset (anchor, positive, negatives, ...), ``labels`` the dataset's label column
or ``None``. :class:`ContrastkitLoss` embeds every column with
``model(features)["sentence_embedding"]`` and hands the embeddings, in column order, to a
contrastkit objective:

* ``InfoNCE(temperature=0.05)`` on (anchor, positive[, negative]) is sentence-transformers'
  ``MultipleNegativesRankingLoss`` (``scale=20``; a negative column is shared by every anchor,
  as there); ``MultipleNegativesRanking()`` takes any number of negative columns;
* ``CLIP()`` adds a learnable temperature (the trainer optimises the loss's parameters too);
* label-based objectives (``SupCon``) get the labels with ``use_labels=True``.

With ``mini_batch_size`` the columns are embedded by :func:`contrastkit.gradcache.cached_embed`
(GradCache: the role of ``CachedMultipleNegativesRankingLoss``, for every objective): encoder
memory is bounded by ``mini_batch_size`` rows, the gradients are those of the plain loss.
This module does not import sentence-transformers; it only calls the model.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Optional

from torch import Tensor, nn

from ..gradcache import cached_embed

__all__ = ["ContrastkitLoss"]


class ContrastkitLoss(nn.Module):
    """``ContrastkitLoss(model, loss, mini_batch_size=None, use_labels=False)``.

    Args:
        model: a ``SentenceTransformer`` (anything whose ``model(features)`` returns a dict with
            ``"sentence_embedding"``).
        loss: a contrastkit objective (module or function) called as
            ``loss(*column_embeddings)`` or, with ``use_labels``, ``loss(*embeddings, labels)``.
        mini_batch_size: embed with gradient caching, this many rows per encoder call
            (``None``: one ordinary forward per column).
        use_labels: pass the dataset's label column to the objective (SupCon).
        save_rng: with gradient caching, restore each mini-batch's RNG state for the replay
            (identical dropout in both passes).
    """

    def __init__(
        self,
        model: nn.Module,
        loss,
        *,
        mini_batch_size: Optional[int] = None,
        use_labels: bool = False,
        save_rng: bool = True,
    ):
        super().__init__()
        if not callable(loss):
            raise ValueError(f"loss must be a callable objective, got {type(loss).__name__}")
        if mini_batch_size is not None and (
            isinstance(mini_batch_size, bool)
            or not isinstance(mini_batch_size, int)
            or mini_batch_size < 1
        ):
            raise ValueError(f"mini_batch_size must be a positive integer, got {mini_batch_size!r}")
        self.model = model
        self.loss = loss
        self.mini_batch_size = mini_batch_size
        self.use_labels = use_labels
        self.save_rng = save_rng

    def _cached(self, features: dict[str, Any], name: str) -> Tensor:
        # rows: those of the token tensors; other tensors (a prompt_length of shape (1,), 0-dim
        # counts) are per-batch metadata that every mini-batch gets unchanged
        rows = next(
            (v.shape[0] for v in features.values() if isinstance(v, Tensor) and v.dim() >= 2),
            None,
        )
        per_row, meta = {}, {}
        for key, value in features.items():
            is_row = isinstance(value, Tensor) and value.dim() >= 1 and value.shape[0] == rows
            (per_row if is_row else meta)[key] = value

        def encode(**chunk: Tensor) -> Tensor:
            return self.model({**chunk, **meta})["sentence_embedding"]

        return cached_embed(
            encode, per_row, self.mini_batch_size, save_rng=self.save_rng, name=name
        )

    def embed(self, sentence_features: Iterable[dict[str, Any]]) -> list[Tensor]:
        """One embedding tensor per input column (cached when ``mini_batch_size`` is set)."""
        columns = list(sentence_features)
        if not columns:
            raise ValueError("sentence_features is empty: the dataset needs at least one column")
        if self.mini_batch_size is None:
            return [self.model(f)["sentence_embedding"] for f in columns]
        return [self._cached(dict(f), f"sentence_features[{i}]") for i, f in enumerate(columns)]

    def forward(self, sentence_features: Iterable[dict[str, Any]], labels: Optional[Tensor]):
        embeddings = self.embed(sentence_features)
        if self.use_labels:
            if labels is None:
                raise ValueError("use_labels=True but the dataset has no label column")
            return self.loss(*embeddings, labels)
        return self.loss(*embeddings)

    def get_config_dict(self) -> dict[str, Any]:
        """What sentence-transformers writes into the model card."""
        config: dict[str, Any] = {"loss": getattr(self.loss, "__name__", type(self.loss).__name__)}
        names = getattr(self.loss, "options", ())  # the options of an Objective twin
        for name in names if isinstance(names, tuple) else ():
            config[name] = getattr(self.loss, name)
        scale = getattr(self.loss, "logit_scale", None)
        if isinstance(scale, Tensor):  # CLIP and the other objectives with a learnable scale
            config["temperature"] = float((-scale.detach()).exp())
        config.update(mini_batch_size=self.mini_batch_size, use_labels=self.use_labels)
        return config
