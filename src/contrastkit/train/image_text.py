"""Method ``image-text``: a two-tower image-text model trained on the user's own captioned images.

* **data**: a CSV / TSV / JSONL / Parquet table of image paths and captions
  (:class:`contrastkit.data.ImageTextPairs`: column names, paths confined to the table's folder,
  a bad row is a ``DataError`` naming file, line and column). Every image is decoded once,
  resized (shorter side) and centre-cropped to ``image_size`` and held as ``uint8``; ``holdout``
  pairs (drawn with ``split_seed``) are kept out of training for the evaluation.
* **image tower**: a `timm <https://github.com/huggingface/pytorch-image-models>`_ architecture
  by name (``image_model``, e.g. ``resnet18``, ``vit_tiny_patch16_224``), randomly initialised
  or loaded from a local safetensors file (``image_weights``: weights only, nothing executed),
  with its classifier removed, then a linear projection to ``embed_dim``.
* **text tower**: a local transformers / sentence-transformers model (``model``; default the
  offline MiniLM) with its own pooling, then a linear projection to ``embed_dim``.
* **loss**: any objective taking ``(image, text)`` embeddings; default ``CLIP`` (the learnable
  temperature lives in the loss and is checkpointed with it).
* **augmentation** (training only, seeded): a random crop of 60-100 % of the side resized back,
  and a horizontal flip; images are normalised with ImageNet's mean and standard deviation.
* **evaluation**: image -> caption retrieval on the held-out pairs (Recall@1, and Recall@10 and
  MRR@10 beyond 10 pairs, mean rank) for the towers before (``random_init``) and after
  training.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import TrainConfig
from .methods import Method, _cpu, _eval_mode, load_pairs_model

__all__ = ["ImageTextMethod", "build_image_tower"]

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def build_image_tower(name: str, weights: str = "") -> nn.Module:
    """A timm architecture without its classifier (``num_classes=0``: pooled features), random
    or with the weights of a local safetensors file. Errors name the config field."""
    from .._compat import ensure_torchvision_importable

    ensure_torchvision_importable()  # timm imports torchvision; see contrastkit._compat
    try:
        import timm
    except ImportError:
        raise ValueError(
            "config field 'image_model': image towers need timm (pip install timm)"
        ) from None
    if not timm.is_model(name):
        raise ValueError(
            f"config field 'image_model': {name!r} is not a timm architecture "
            "(timm.list_models() lists them)"
        )
    tower = timm.create_model(name, pretrained=False, num_classes=0)
    if weights:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(weights)
        if not path.is_file():
            raise ValueError(f"config field 'image_weights': no file {weights!r}")
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(
                f"config field 'image_weights': {weights!r} is not a safetensors file: {exc}"
            ) from None
        state = {
            k: v for k, v in state.items() if not k.startswith(("fc.", "head.", "classifier."))
        }
        try:
            tower.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            text = " ".join(str(exc).split())[:300]
            raise ValueError(
                f"config field 'image_weights': {weights!r} does not fit {name}: {text}"
            ) from None
    return tower


def _load_images(cfg: TrainConfig) -> tuple[Tensor, list[str]]:
    """Every (image, caption) of the table: images ``(N, 3, S, S)`` uint8, captions."""
    from ..data import ImageTextPairs

    size = cfg.image_size

    def square(image) -> Tensor:
        w, h = image.size
        scale = size / min(w, h)
        image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))))
        w, h = image.size
        left, top = (w - size) // 2, (h - size) // 2
        image = image.crop((left, top, left + size, top + size))
        return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)

    images, captions = [], []
    for image, caption in ImageTextPairs(cfg.data, columns=cfg.columns or None, transform=square):
        images.append(image)
        captions.append(caption)
    if len(images) < 2:
        raise ValueError(f"config field 'data': {cfg.data} holds {len(images)} image-text pair(s)")
    return torch.stack(images), captions


class ImageTextMethod(Method):
    """Two towers (timm image model, text model), linear projections, CLIP-style loss."""

    kind = "image-text"
    input_name = ""  # no raw-input baseline

    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        self.y_train = self.y_test = None
        image = build_image_tower(cfg.image_model, cfg.image_weights)
        text, self.tokenizer, self.pooling = load_pairs_model(cfg.model, cfg.dropout)
        self.modules = nn.ModuleDict(
            {
                "encoder": image,
                "image_proj": nn.Linear(image.num_features, cfg.embed_dim, bias=False),
                "text_encoder": text,
                "text_proj": nn.Linear(text.config.hidden_size, cfg.embed_dim, bias=False),
            }
        )
        self.random_init = copy.deepcopy(image)
        self._random_towers = copy.deepcopy(self.modules)
        self._data: dict | None = None

    def data(self) -> dict:
        if self._data is None:
            cfg = self.cfg
            images, captions = _load_images(cfg)
            n = images.shape[0]
            held = min(cfg.holdout, n // 5)
            order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.split_seed))
            test, train = order[:held].sort().values, order[held:].sort().values
            if not held:
                test = train[:256]
            self._data = {
                "images": images,
                "captions": captions,
                "train": train,
                "test": test,
                "held_out": held > 0,
            }
        return self._data

    @property
    def n_train(self) -> int:
        return int(self.data()["train"].shape[0])

    @property
    def held_out(self) -> bool:
        return self.data()["held_out"]

    def _pixels(self, images: Tensor, gen: torch.Generator | None = None) -> Tensor:
        x = images.float() / 255.0
        if gen is not None:  # a random crop of 60-100 % of the side, resized back; a flip
            size = x.shape[-1]
            out = []
            for img in x:
                side = int(size * (0.6 + 0.4 * float(torch.rand((), generator=gen))))
                top = int(torch.randint(0, size - side + 1, (), generator=gen))
                left = int(torch.randint(0, size - side + 1, (), generator=gen))
                crop = img[None, :, top : top + side, left : left + side]
                crop = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False)
                if bool(torch.rand((), generator=gen) < 0.5):
                    crop = crop.flip(-1)
                out.append(crop)
            x = torch.cat(out)
        return self.dev((x - MEAN) / STD)

    def _text(self, captions: list[str], towers: nn.ModuleDict) -> Tensor:
        from ..models.text import pool

        tok = self.tokenizer(
            captions,
            padding=True,
            truncation=True,
            max_length=self.cfg.max_length,
            return_tensors="pt",
        )
        tok = {k: v.to(self.device) for k, v in tok.items()}
        hidden = towers["text_encoder"](**tok).last_hidden_state
        return towers["text_proj"](pool(hidden, tok["attention_mask"], self.pooling))

    def embed_pair(self, pixels: Tensor, captions: list[str], towers: nn.ModuleDict | None = None):
        m = towers if towers is not None else self.modules
        return m["image_proj"](m["encoder"](pixels)), self._text(captions, m)

    def batch_loss(self, idx, gen):
        d = self.data()
        rows = d["train"][idx]
        a, b = self.embed_pair(
            self._pixels(d["images"][rows], gen), [d["captions"][i] for i in rows.tolist()]
        )
        return self.loss_fn(a, b)

    def probe_pairs(self, towers: nn.ModuleDict | None = None, batch: int = 64):
        d = self.data()
        m = towers if towers is not None else self.modules
        rows = d["test"]

        def run():
            outs = [
                self.embed_pair(
                    self._pixels(d["images"][rows[i : i + batch]]),
                    [d["captions"][j] for j in rows[i : i + batch].tolist()],
                    m,
                )
                for i in range(0, rows.shape[0], batch)
            ]
            return _cpu(torch.cat([o[0] for o in outs])), _cpu(torch.cat([o[1] for o in outs]))

        a, b = _eval_mode(run, m)
        return F.normalize(a, dim=-1), F.normalize(b, dim=-1)

    def features(self, which: str = "trained") -> dict:
        a, b = self.probe_pairs(self._random_towers if which == "random_init" else None)
        return {"train": a, "test": b}
