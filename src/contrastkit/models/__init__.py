"""Model loaders for evaluation and training: :class:`TextEncoder` (local Hugging Face
transformers or sentence-transformers directories, nothing downloaded, no remote code)."""

from .text import POOLING_MODES, TextEncoder, default_text_model

__all__ = ["POOLING_MODES", "TextEncoder", "default_text_model"]
