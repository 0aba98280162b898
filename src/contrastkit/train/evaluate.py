"""Evaluation of a run with honest baselines from the same run.

Every recipe is scored for the trained encoder, the same encoder at its initialisation
(``random_init``; for the text recipe the pre-trained MiniLM before SimCSE) and the raw input
(``pixels``; for text a TF-IDF bag of words fitted on the training sentences), under the same
protocols on the fixed split: weighted kNN (k = 20 and 200, temperature 0.07), a linear probe
(standardised features, logistic regression), effective rank and uniformity of the test
features. Two-tower runs add image -> sinogram retrieval (Recall@1/5/10, MRR@10, nDCG@10),
zero-shot accuracy from sinogram class prototypes and the modality gap; the text recipe adds
Spearman correlation with graded similarity judgements and token isotropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import metrics as M


def representation_scores(train, y_train, test, y_test) -> dict:
    z = F.normalize(test.double(), dim=-1)
    return {
        "knn_top1": M.knn_accuracy(train, y_train, test, y_test, k=20, temperature=0.07),
        "knn_top1_k200": M.knn_accuracy(train, y_train, test, y_test, k=200, temperature=0.07),
        "linear_probe": M.linear_probe_accuracy(train, y_train, test, y_test),
        "effective_rank": M.effective_rank(test.double()),
        "uniformity": M.uniformity(z),
    }


def retrieval_scores(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Query ``a_i`` should retrieve candidate ``b_i`` (one relevant item per query)."""
    scores = M.cosine_scores(a, b)
    rel = torch.eye(a.shape[0])
    return {
        "recall@1": M.recall_at_k(scores, rel, k=1),
        "recall@5": M.recall_at_k(scores, rel, k=5),
        "recall@10": M.recall_at_k(scores, rel, k=10),
        "mrr@10": M.mrr_at_k(scores, rel, k=10),
        "ndcg@10": M.ndcg_at_k(scores, rel, k=10),
        "mean_rank": M.mean_rank(M.retrieval_ranks(a, b)),
        "modality_gap": M.modality_gap(a, b),
    }


def evaluate(method) -> dict:
    """All scores of a :class:`~contrastkit.train.methods.Method` (see the module docstring)."""
    if method.kind == "pairs":
        return _evaluate_pairs(method)
    if method.kind == "image-text":
        return _evaluate_image_text(method)
    names = ["trained", "random_init", method.input_name]
    out: dict = {"representation": {}}
    for name in names:
        f = method.features(name)
        out["representation"][name] = representation_scores(
            f["train"], method.y_train, f["test"], method.y_test
        )
    a, b = method.probe_pairs()
    out["probe_pairs"] = {"alignment": M.alignment(a.double(), b.double())}
    if method.kind == "clip":
        out["retrieval"] = {}
        out["zero_shot"] = {}
        for name, towers in (("trained", None), ("random_init", method._random_towers)):
            ia, sb = method.probe_pairs(towers)
            out["retrieval"][name] = retrieval_scores(ia, sb)
            _, train_sino = method.probe_pairs(towers, split="train")
            protos = torch.stack(
                [
                    train_sino[method.y_train == c].mean(0)
                    for c in range(int(method.y_train.max()) + 1)
                ]
            )
            out["zero_shot"][name] = M.zero_shot_accuracy(ia, protos, method.y_test)
    if method.kind == "simcse":
        out["sts_spearman"] = {}
        d = method.data
        for name in names:
            if name == "tfidf":
                vec = method.tfidf()
                e1 = torch.tensor(vec.transform(d.pair_a).toarray())
                e2 = torch.tensor(vec.transform(d.pair_b).toarray())
            else:
                e1, e2 = _text_pairs(method, method.encoder(name), d.pair_a, d.pair_b)
            out["sts_spearman"][name] = M.sts_spearman(e1, e2, d.pair_score)
        out["isotropy"] = {
            name: _isotropy(method, method.encoder(name)) for name in ("trained", "random_init")
        }
    return out


def pair_retrieval(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Anchors ``a_i`` retrieving their positives ``b_i`` among all ``b``: Recall@1 (and
    Recall@10, MRR@10 when there are more than 10 pairs), mean rank."""
    scores = M.cosine_scores(a, b)
    rel = torch.eye(a.shape[0])
    out = {"recall@1": M.recall_at_k(scores, rel, k=1), "pairs": int(a.shape[0])}
    if a.shape[0] > 10:
        out["recall@10"] = M.recall_at_k(scores, rel, k=10)
        out["mrr@10"] = M.mrr_at_k(scores, rel, k=10)
    out["mean_rank"] = M.mean_rank(M.retrieval_ranks(a, b))
    return out


def _evaluate_pairs(method) -> dict:
    """Method ``pairs``: retrieval of the held-out positives by their anchors, for the model
    before (``random_init``: the loaded model) and after training."""
    out: dict = {"retrieval": {}, "held_out": method.held_out}
    if method.cfg.mine_negatives:
        out["mining"] = dict(method.mining)  # rounds mined by this process, padded slots
    for name in ("trained", "random_init"):
        a, b = method.probe_pairs(method.encoder(name))
        out["retrieval"][name] = pair_retrieval(a, b)
    a, b = method.probe_pairs()
    out["probe_pairs"] = {"alignment": M.alignment(a.double(), b.double())}
    if method.eval_data is not None:
        from ..evaluation import evaluate_retrieval, evaluate_sts

        task, data = method.eval_data
        if task == "retrieval":

            def run(enc, data):
                return evaluate_retrieval(enc, data, progress=method.cfg.progress)
        else:
            run = evaluate_sts
        out["eval_data"] = {
            "task": task,
            **{name: run(method.text_encoder(name), data) for name in ("trained", "random_init")},
        }
    return out


def _evaluate_image_text(method) -> dict:
    """Method ``image-text``: image -> caption retrieval on the held-out pairs, the towers
    before (``random_init``) and after training."""
    out: dict = {"retrieval": {}, "held_out": method.held_out}
    for name, towers in (("trained", None), ("random_init", method._random_towers)):
        a, b = method.probe_pairs(towers)
        out["retrieval"][name] = pair_retrieval(a, b)
    a, b = method.probe_pairs()
    out["probe_pairs"] = {"alignment": M.alignment(a.double(), b.double())}
    return out


def _text_pairs(method, enc, a, b):
    from .methods import _cpu, _eval_mode

    return _eval_mode(lambda: (_cpu(method.encode(a, enc)), _cpu(method.encode(b, enc))), enc)


def _isotropy(method, enc, n: int = 256) -> float:
    from .methods import _eval_mode
    from .text_model import token_states

    tok = method.tokenizer(
        method.data.test[:n],
        padding=True,
        truncation=True,
        max_length=method.cfg.max_length,
        return_tensors="pt",
    )
    states = _eval_mode(lambda: token_states(enc, tok.to(method.device)), enc)
    return M.isotropy([s.to("cpu", torch.float32) for s in states])


def summary_rows(result: dict) -> list[tuple[str, float, float]]:
    """``(name, kNN top-1, linear probe)`` for printing."""
    return [
        (name, s["knn_top1"], s["linear_probe"])
        for name, s in result.get("representation", {}).items()
    ]
