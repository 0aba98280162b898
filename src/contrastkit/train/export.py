"""Export a run's trained encoder for use outside contrastkit (``contrastkit export RUN``).

* Text runs (``simcse``, ``pairs``) become a **sentence-transformers model directory**: the
  transformer and tokenizer saved with ``save_pretrained`` (safetensors), ``modules.json`` with
  a Transformer and a mean Pooling module, ``sentence_bert_config.json`` (``max_seq_length`` =
  the run's ``max_length``). ``SentenceTransformer(path).encode(texts)`` and mean-pooling
  ``AutoModel.from_pretrained(path)`` give the embeddings contrastkit evaluated. No Normalize
  module is added, since contrastkit's features are not normalised; normalise the embeddings
  yourself (or pass ``normalize_embeddings=True``) for cosine search.
* Image-text runs (``image-text``) export the image tower (``image_tower.safetensors`` and
  ``image_tower.json``: the timm architecture, image size and normalisation), its projection
  (``image_projection.safetensors``) and the text tower with its projection as a
  sentence-transformers directory (``text/``, with a ``Dense`` module).
* Digit runs (``two-view``, ``moco``, ``clip``) export the evaluated encoder (for ``clip``: the
  image tower) as ``encoder.safetensors`` plus ``encoder.json`` (its architecture);
  :func:`load_encoder` rebuilds it without running any code from the directory.

Every export also writes ``contrastkit_export.json`` (run, recipe, step).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

from torch import nn

from .._extras import require
from .model import MLPEncoder

META = "contrastkit_export.json"


def _target(run_dir: Path, out: Optional[str | Path]) -> Path:
    target = Path(out) if out is not None else run_dir / "export"
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise ValueError(f"--out {str(target)!r} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()):
        if not (target / META).is_file():
            raise ValueError(
                f"--out {str(target)!r} is not empty and holds no contrastkit export; "
                "choose an empty or new directory"
            )
        import shutil

        shutil.rmtree(target)  # an earlier export of ours: replaced
    target.mkdir(parents=True, exist_ok=True)
    return target


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


def export_run(
    run: str | Path, out: Optional[str | Path] = None, warn: Optional[Callable] = None
) -> Path:
    """Export the encoder of ``run`` (a run directory or one of its checkpoints) to ``out``
    (default ``<run>/export``); returns the directory. An existing ``out`` is replaced only if
    it holds an earlier contrastkit export."""
    from .loop import load_run

    method, run_dir, state = load_run(run, warn)
    target = _target(run_dir, out)
    cfg = method.cfg
    if method.kind in ("simcse", "pairs"):
        _export_sentence_transformer(method, target)
        fmt = "sentence-transformers"
    elif method.kind == "image-text":
        _export_image_text(method, target)
        fmt = "contrastkit-image-text"
    else:
        enc = method.encoder("trained")
        require("safetensors", "train", "exporting a run")
        from safetensors.torch import save_file

        save_file(
            {k: v.detach().cpu().contiguous() for k, v in enc.state_dict().items()},
            str(target / "encoder.safetensors"),
        )
        lin = [m for m in enc.net if isinstance(m, nn.Linear)]
        arch = {
            "architecture": "MLPEncoder",
            "in_dim": lin[0].in_features,
            "hidden_dim": lin[0].out_features,
            "embed_dim": lin[-1].out_features,
        }
        _write_json(target / "encoder.json", arch)
        fmt = "contrastkit-mlp"
    _write_json(
        target / META,
        {"format": fmt, "run": str(run_dir), "recipe": cfg.recipe, "step": state["step"]},
    )
    return target


def _export_sentence_transformer(
    method, target: Path, enc: Optional[nn.Module] = None, projection: Optional[nn.Linear] = None
) -> None:
    """``enc`` (default the method's encoder) as a sentence-transformers directory: the
    transformer, the pooling, and ``projection`` as a ``Dense`` module (identity activation)."""
    enc = enc if enc is not None else method.modules["encoder"]
    pooling = getattr(method, "pooling", "mean")
    enc.save_pretrained(str(target), safe_serialization=True)
    method.tokenizer.save_pretrained(str(target))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if projection is not None:
        from safetensors.torch import save_file

        modules.append(
            {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
        )
        (target / "2_Dense").mkdir()
        _write_json(
            target / "2_Dense" / "config.json",
            {
                "in_features": projection.in_features,
                "out_features": projection.out_features,
                "bias": projection.bias is not None,
                "activation_function": "torch.nn.modules.linear.Identity",
            },
        )
        weights = {
            f"linear.{k}": v.detach().cpu().contiguous() for k, v in projection.state_dict().items()
        }
        save_file(weights, str(target / "2_Dense" / "model.safetensors"))
    _write_json(target / "modules.json", modules)
    _write_json(
        target / "sentence_bert_config.json",
        {"max_seq_length": method.cfg.max_length, "do_lower_case": False},
    )
    (target / "1_Pooling").mkdir()
    _write_json(
        target / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": enc.config.hidden_size,
            "pooling_mode_cls_token": pooling == "cls",
            "pooling_mode_mean_tokens": pooling == "mean",
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_lasttoken": pooling == "last",
        },
    )


def _export_image_text(method, target: Path) -> None:
    """The image tower (``image_tower.safetensors``, rebuilt with
    :func:`contrastkit.train.image_text.build_image_tower` from ``image_tower.json``) and its
    projection (``image_projection.safetensors``, ``nn.Linear(num_features, embed_dim,
    bias=False)``); the text tower with its projection as a sentence-transformers directory
    (``text/``)."""
    require("safetensors", "train", "exporting a run")
    from safetensors.torch import save_file

    from .image_text import MEAN, STD

    m, cfg = method.modules, method.cfg

    def save(module: nn.Module, name: str) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
        save_file(state, str(target / name))

    save(m["encoder"], "image_tower.safetensors")
    save(m["image_proj"], "image_projection.safetensors")
    _write_json(
        target / "image_tower.json",
        {
            "architecture": cfg.image_model,
            "library": "timm",
            "image_size": cfg.image_size,
            "embed_dim": cfg.embed_dim,
            "mean": MEAN.flatten().tolist(),
            "std": STD.flatten().tolist(),
        },
    )
    (target / "text").mkdir()
    _export_sentence_transformer(method, target / "text", m["text_encoder"], m["text_proj"])


def load_encoder(path: str | Path) -> nn.Module:
    """The encoder of a digit-run export (``encoder.json`` + ``encoder.safetensors``), in eval
    mode. Only the JSON's numbers are read; nothing in the directory is executed."""
    require("safetensors", "train", "loading an exported encoder")
    from safetensors.torch import load_file

    path = Path(path)
    try:
        arch = json.loads((path / "encoder.json").read_text())
        if arch.get("architecture") != "MLPEncoder":
            raise ValueError(f"unknown architecture {arch.get('architecture')!r}")
        dims = {k: int(arch[k]) for k in ("in_dim", "hidden_dim", "embed_dim")}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"{path / 'encoder.json'}: not a contrastkit encoder export ({exc})"
        ) from None
    enc = MLPEncoder(**dims)
    enc.load_state_dict(load_file(str(path / "encoder.safetensors")))
    return enc.eval()


__all__ = ["export_run", "load_encoder"]
