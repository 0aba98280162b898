"""A plain torch BERT encoder for a sentence-transformers model directory (inference only).

Used by :class:`contrastkit.mining.encoders.MiniLMEncoder` when sentence-transformers cannot be
imported. It reads ``config.json``, ``model.safetensors``, ``tokenizer.json`` (HF ``tokenizers``)
and ``sentence_bert_config.json`` (``max_seq_length``) and computes BERT (post-LayerNorm, GELU,
absolute positions, token type 0), mean pooling over the attention mask and L2 normalisation:
the ``Transformer -> Pooling(mean) -> Normalize`` pipeline of all-MiniLM-L6-v2.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from contrastkit._extras import require


class BertEncoder:
    def __init__(self, model_dir, device: str = "cpu"):
        require("safetensors", "mining", "the torch MiniLM encoder of contrastkit.mining")
        from safetensors.torch import load_file

        require("tokenizers", "text", "the torch MiniLM encoder of contrastkit.mining")
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        cfg = json.loads((model_dir / "config.json").read_text())
        st_cfg_path = model_dir / "sentence_bert_config.json"
        st_cfg = json.loads(st_cfg_path.read_text()) if st_cfg_path.exists() else {}
        self.max_len = int(st_cfg.get("max_seq_length", cfg["max_position_embeddings"]))
        self.heads = int(cfg["num_attention_heads"])
        self.layers = int(cfg["num_hidden_layers"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        if cfg.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"unsupported hidden_act {cfg.get('hidden_act')!r} in {model_dir}")
        self.device = torch.device(device)
        weights = load_file(str(model_dir / "model.safetensors"))
        self.w = {k: v.to(self.device, torch.float32) for k, v in weights.items()}
        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tok.enable_truncation(max_length=self.max_len)
        self.tok.no_padding()

    def _ln(self, x, name):
        return F.layer_norm(
            x, x.shape[-1:], self.w[f"{name}.weight"], self.w[f"{name}.bias"], self.eps
        )

    def _lin(self, x, name):
        return F.linear(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"])

    @torch.no_grad()
    def _forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = self.w
        n, t = ids.shape
        pos = torch.arange(t, device=self.device)
        h = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][pos][None]
            + w["embeddings.token_type_embeddings.weight"][0][None, None]
        )
        h = self._ln(h, "embeddings.LayerNorm")
        hd = h.shape[-1] // self.heads
        bias = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for i in range(self.layers):
            p = f"encoder.layer.{i}"

            def split(x):
                return x.view(n, t, self.heads, hd).transpose(1, 2)

            q = split(self._lin(h, f"{p}.attention.self.query"))
            k = split(self._lin(h, f"{p}.attention.self.key"))
            v = split(self._lin(h, f"{p}.attention.self.value"))
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + bias, dim=-1)
            ctx = (att @ v).transpose(1, 2).reshape(n, t, -1)
            h = self._ln(
                h + self._lin(ctx, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm"
            )
            inter = F.gelu(self._lin(h, f"{p}.intermediate.dense"))
            h = self._ln(h + self._lin(inter, f"{p}.output.dense"), f"{p}.output.LayerNorm")
        m = mask[..., None].float()
        pooled = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
        return F.normalize(pooled, dim=-1)

    def encode(self, texts, batch_size: int = 64) -> np.ndarray:
        out = []
        for b0 in range(0, len(texts), batch_size):
            enc = self.tok.encode_batch(list(texts[b0 : b0 + batch_size]))
            t = max(len(e.ids) for e in enc)
            ids = torch.zeros(len(enc), t, dtype=torch.long)
            mask = torch.zeros(len(enc), t, dtype=torch.long)
            for r, e in enumerate(enc):
                ids[r, : len(e.ids)] = torch.tensor(e.ids)
                mask[r, : len(e.ids)] = 1
            out.append(self._forward(ids.to(self.device), mask.to(self.device)).cpu().numpy())
        if not out:
            return np.zeros((0, self.w["embeddings.word_embeddings.weight"].shape[1]), np.float32)
        return np.concatenate(out).astype(np.float32)
