"""Text views: SimCSE dropout views and ESimCSE word (token) repetition.

* SimCSE (Gao, Yao, Chen, "SimCSE: Simple Contrastive Learning of Sentence Embeddings",
  EMNLP 2021): the two views of a sentence are two train-mode forwards of the same input; the
  independent dropout masks are the only augmentation (arXiv:2104.08821).
* ESimCSE (Wu et al., "ESimCSE: Enhanced Sample Building Method for Contrastive Learning of
  Unsupervised Sentence Embedding", COLING 2022): the second view duplicates a few tokens in
  place, so that the two views differ in length (arXiv:2109.04380; official ``caskcsg/sentemb``
  ``ESimCSE/train.py``, ``dup_type="bpe"``).
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ._random import check_generator, randint, randperm, seeded_global_rng

__all__ = [
    "dropout_views",
    "word_repetition",
    "word_repetition_batch",
    "RepeatedBatch",
]


def _cat_inputs(x, n_copies: int):
    if isinstance(x, Tensor):
        return torch.cat([x] * n_copies)
    if isinstance(x, Mapping):
        return {
            k: (torch.cat([v] * n_copies) if isinstance(v, Tensor) else v) for k, v in x.items()
        }
    raise ValueError(f"inputs must be a Tensor or a mapping of tensors, got {type(x).__name__}")


def _call(encoder, x):
    out = encoder(**x) if isinstance(x, Mapping) else encoder(x)
    if not isinstance(out, Tensor):
        raise ValueError(
            "encoder must return a Tensor of embeddings (wrap it to pool), "
            f"got {type(out).__name__}"
        )
    return out


def dropout_views(
    encoder: nn.Module,
    inputs: Union[Tensor, Mapping[str, Any]],
    *,
    stacked: bool = True,
    generator: Optional[torch.Generator] = None,
) -> tuple[Tensor, Tensor]:
    """SimCSE: two embeddings ``(z1, z2)`` of the same ``inputs`` under independent dropout.

    The encoder runs in train mode (its previous mode is restored afterwards, module by module).
    ``stacked=True`` (official): one forward on the batch duplicated along dim 0 (``[x; x]``,
    ``2N`` rows; every tensor of a mapping such as ``input_ids`` / ``attention_mask`` is
    duplicated); ``stacked=False``: two forwards. ``inputs`` is a tensor (``encoder(x)``) or a
    mapping (``encoder(**x)``); the encoder must return a tensor whose first dim is the batch.
    ``generator`` seeds the dropout masks (torch's global RNG state is restored afterwards).
    Positives: ``z1[i]`` and ``z2[i]``.
    """
    if not isinstance(encoder, nn.Module):
        raise ValueError(f"encoder must be a torch.nn.Module, got {type(encoder).__name__}")
    check_generator(generator)
    ref = None
    if isinstance(inputs, Tensor):
        ref = inputs
    elif isinstance(inputs, Mapping):
        ref = next((v for v in inputs.values() if isinstance(v, Tensor)), None)
    if ref is None:
        raise ValueError("inputs must be a Tensor or a mapping with at least one tensor")
    n = ref.shape[0]
    devices = [ref.device] if ref.device.type == "cuda" else []
    modes = {m: m.training for m in encoder.modules()}
    try:
        encoder.train()
        with seeded_global_rng(generator, devices):
            if stacked:
                z = _call(encoder, _cat_inputs(inputs, 2))
                if z.shape[0] != 2 * n:
                    raise ValueError(
                        f"encoder returned {z.shape[0]} rows for a stacked batch of {2 * n}"
                    )
                return z[:n], z[n:]
            return _call(encoder, inputs), _call(encoder, inputs)
    finally:
        for m, was_training in modes.items():
            m.training = was_training


# ----------------------------------------------------------------------------- word repetition


def _check_rate(dup_rate) -> float:
    if isinstance(dup_rate, bool) or not isinstance(dup_rate, (int, float)):
        raise ValueError(f"dup_rate must be a number in [0, 1], got {dup_rate!r}")
    if not 0.0 <= float(dup_rate) <= 1.0:
        raise ValueError(f"dup_rate must be in [0, 1], got {dup_rate}")
    return float(dup_rate)


def _draw_positions(length: int, dup_rate: float, max_dup: int, generator) -> list[int]:
    """Official ``dup_type="bpe"`` rule: if ``int(r L) > 0``, ``n = randrange(min(max_dup,
    int(r L)))`` distinct positions from ``[1, L - 2]`` (never the first or last token)."""
    cap = int(dup_rate * length)
    if cap <= 0 or length < 3:
        return []
    n = int(randint(0, min(max_dup, cap), (1,), generator))
    n = min(n, length - 2)
    pos = randperm(length - 2, generator)[:n] + 1
    return sorted(pos.tolist())


def word_repetition(
    tokens: Union[Sequence[int], Tensor],
    dup_rate: float = 0.32,
    *,
    generator: Optional[torch.Generator] = None,
    max_dup: int = 10,
    return_positions: bool = False,
):
    """ESimCSE token-level word repetition of one tokenised sequence (special tokens included).

    With ``L = len(tokens)``: if ``int(dup_rate L) > 0``, ``n_dup`` is uniform in
    ``[0, min(max_dup, int(dup_rate L)) - 1]`` and ``n_dup`` distinct positions are drawn from
    ``[1, L - 2]``; each chosen token is duplicated in place (a copy right after it). The output
    has ``L + n_dup`` tokens and keeps the first and last token. ``dup_rate``: 0.32 (BERT), 0.30
    (RoBERTa-base), 0.28 (RoBERTa-large). Returns a list (or a 1-D tensor for a tensor input),
    plus the sorted duplicated input positions when ``return_positions``.
    """
    r = _check_rate(dup_rate)
    check_generator(generator)
    if isinstance(max_dup, bool) or not isinstance(max_dup, int) or max_dup < 1:
        raise ValueError(f"max_dup must be a positive integer, got {max_dup!r}")
    if isinstance(tokens, Tensor):
        if tokens.dim() != 1:
            raise ValueError(f"tokens must be a 1-D tensor, got shape {tuple(tokens.shape)}")
        pos = _draw_positions(tokens.shape[0], r, max_dup, generator)
        reps = torch.ones(tokens.shape[0], dtype=torch.long, device=tokens.device)
        reps[torch.tensor(pos, dtype=torch.long, device=tokens.device)] = 2
        out = torch.repeat_interleave(tokens, reps)
    else:
        seq = list(tokens)
        pos = _draw_positions(len(seq), r, max_dup, generator)
        dup = set(pos)
        out = []
        for i, t in enumerate(seq):
            out.append(t)
            if i in dup:
                out.append(t)
    return (out, pos) if return_positions else out


class RepeatedBatch(NamedTuple):
    """``input_ids (N, L')`` right-padded, ``attention_mask (N, L')`` and ``lengths (N,)``."""

    input_ids: Tensor
    attention_mask: Tensor
    lengths: Tensor


def word_repetition_batch(
    input_ids: Tensor,
    attention_mask: Optional[Tensor] = None,
    dup_rate: float = 0.32,
    *,
    generator: Optional[torch.Generator] = None,
    pad_token_id: int = 0,
    max_dup: int = 10,
) -> RepeatedBatch:
    """:func:`word_repetition` of every row of a right-padded batch ``(N, L)``; each row's length
    is the number of ones in its ``attention_mask`` (all of ``L`` without one). The result is
    right-padded with ``pad_token_id`` to the longest new row."""
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
        got = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids must be a 2-D tensor (N, L), got {got}")
    if input_ids.is_floating_point():
        raise ValueError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
    if attention_mask is None:
        lengths = torch.full((input_ids.shape[0],), input_ids.shape[1], dtype=torch.long)
    else:
        if not isinstance(attention_mask, Tensor) or attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, got "
                f"{tuple(getattr(attention_mask, 'shape', ()))}"
            )
        lengths = attention_mask.long().sum(1).cpu()
        ar = torch.arange(input_ids.shape[1])
        if not torch.equal(attention_mask.bool().cpu(), ar[None, :] < lengths[:, None]):
            raise ValueError("attention_mask must be right-padded (ones, then zeros, per row)")
    rows = [
        word_repetition(
            input_ids[i, : int(lengths[i])], dup_rate, generator=generator, max_dup=max_dup
        )
        for i in range(input_ids.shape[0])
    ]
    new_len = torch.tensor([len(r) for r in rows], dtype=torch.long)
    width = int(new_len.max()) if len(rows) else 0
    out = torch.full(
        (len(rows), width), pad_token_id, dtype=input_ids.dtype, device=input_ids.device
    )
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    mask = (torch.arange(width)[None, :] < new_len[:, None]).to(
        dtype=attention_mask.dtype if attention_mask is not None else torch.long,
        device=input_ids.device,
    )
    return RepeatedBatch(out, mask, new_len.to(input_ids.device))
