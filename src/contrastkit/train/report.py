"""The run report: ``runs/<name>/report.md`` with plots in ``runs/<name>/plots/``.

* loss curve (raw and a moving average) from ``train_log.csv``;
* positive / negative cosine-similarity histograms of fixed probe pairs over training
  (as in Zhu et al., "Improving Contrastive Learning by Visualizing Feature Transformation",
  ICCV 2021) from ``snapshots.jsonl``;
* the alignment-uniformity trajectory (Wang & Isola, ICML 2020; lower-left is better);
* a 2-D t-SNE projection of the test features coloured by label, for the trained encoder and
  the two baselines (initialisation and raw input);
* the evaluation table against those baselines (``metrics.json``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from contrastkit._extras import require


def _plt():
    require("matplotlib", "train", "the run report's plots")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _read_log(run_dir: Path):
    with open(run_dir / "train_log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return np.array([int(r["step"]) for r in rows]), np.array([float(r["loss"]) for r in rows])


def _read_snapshots(run_dir: Path) -> list[dict]:
    path = run_dir / "snapshots.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_loss(run_dir: Path, out: Path) -> None:
    plt = _plt()
    steps, loss = _read_log(run_dir)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, loss, lw=0.8, alpha=0.5, label="loss")
    if len(loss) >= 5:
        w = max(len(loss) // 20, 2)
        smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1 :], smooth, lw=2, label=f"moving average ({w} steps)")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_histograms(snaps: list[dict], out: Path) -> None:
    plt = _plt()
    picks = sorted({0, len(snaps) // 3, 2 * len(snaps) // 3, len(snaps) - 1})
    fig, axes = plt.subplots(1, len(picks), figsize=(3.2 * len(picks), 3), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, i in zip(axes, picks):
        s = snaps[i]
        bins = len(s["pos_hist"])
        centers = np.linspace(-1, 1, bins + 1)
        centers = (centers[:-1] + centers[1:]) / 2
        width = 2.0 / bins
        for key, color, label in (
            ("neg_hist", "tab:red", "negative"),
            ("pos_hist", "tab:blue", "positive"),
        ):
            h = np.asarray(s[key], dtype=float)
            ax.bar(centers, h / max(h.sum(), 1), width=width, alpha=0.55, color=color, label=label)
        ax.set_title(f"step {s['step']}")
        ax.set_xlabel("cosine similarity")
        ax.set_xlim(-1, 1)
    axes[0].set_ylabel("fraction of pairs")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_align_uniform(snaps: list[dict], out: Path) -> None:
    plt = _plt()
    u = np.array([s["uniformity"] for s in snaps])
    a = np.array([s["alignment"] for s in snaps])
    steps = np.array([s["step"] for s in snaps])
    fig, ax = plt.subplots(figsize=(4.8, 4))
    ax.plot(u, a, color="0.6", lw=1, zorder=1)
    sc = ax.scatter(u, a, c=steps, cmap="viridis", zorder=2)
    ax.annotate("start", (u[0], a[0]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.annotate("end", (u[-1], a[-1]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    fig.colorbar(sc, label="step")
    ax.set_xlabel("uniformity  log E exp(-2||x-y||²)  (lower = more uniform)")
    ax.set_ylabel("alignment  E||x-y||²  (lower = better)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _tsne(x: np.ndarray, seed: int) -> np.ndarray:
    """2-D t-SNE (PCA init, perplexity 30, 500 iterations) on one thread: OpenMP threads on a
    busy machine make it ten times slower."""
    require("sklearn", "train", "the run report's t-SNE plot")
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    kw = dict(n_components=2, init="pca", random_state=seed, perplexity=30, n_jobs=1)
    with threadpool_limits(1):
        try:
            return TSNE(max_iter=500, **kw).fit_transform(x)
        except TypeError:  # scikit-learn < 1.5
            return TSNE(n_iter=500, **kw).fit_transform(x)


def plot_projection(features: dict, labels, out: Path, seed: int = 0) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, len(features), figsize=(4 * len(features), 4))
    axes = np.atleast_1d(axes)
    y = np.asarray(labels)
    for ax, (name, x) in zip(axes, features.items()):
        x = np.asarray(x, dtype=np.float64)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        emb = _tsne(x, seed)
        sc = ax.scatter(emb[:, 0], emb[:, 1], c=y, cmap="tab10", s=6)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(sc, ax=axes.tolist(), label="label", shrink=0.8)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _table(result: dict) -> list[str]:
    rep = result["representation"]
    lines = [
        "| features | kNN top-1 (k=20) | kNN top-1 (k=200) | linear probe | effective rank "
        "| uniformity |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in rep.items():
        lines.append(
            f"| {name} | {s['knn_top1']:.1f} % | {s['knn_top1_k200']:.1f} % | "
            f"{s['linear_probe']:.1f} % | {s['effective_rank']:.1f} | {s['uniformity']:.3f} |"
        )
    return lines


_RETRIEVAL_COLUMNS = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "map@100")


def _eval_data_table(ev: dict, cfg) -> list[str]:
    """Before / after rows of the ``eval_data`` evaluation (retrieval or STS)."""
    where = "the docstring task's held-out modules" if cfg.task else f"`{cfg.eval_data}`"
    lines = ["", f"### Evaluation on {where}", ""]
    if ev["task"] == "retrieval":
        cols = [c for c in _RETRIEVAL_COLUMNS if c in ev["trained"]]
        lines += [
            "| model | queries | documents | " + " | ".join(cols) + " |",
            "|---|---|---|" + "---|" * len(cols),
        ]
        for name in ("random_init", "trained"):
            r = ev[name]
            vals = " | ".join(f"{r[c]:.4f}" for c in cols)
            lines.append(f"| {name} | {r['queries']} | {r['documents']} | {vals} |")
        if "ndcg@10" in ev["trained"]:
            gain = ev["trained"]["ndcg@10"] - ev["random_init"]["ndcg@10"]
            lines += ["", f"nDCG@10 after minus before: {gain:+.4f}."]
    else:
        lines += ["| model | pairs | Spearman | Pearson |", "|---|---|---|---|"]
        for name in ("random_init", "trained"):
            r = ev[name]
            lines.append(f"| {name} | {r['pairs']} | {r['spearman']:.2f} | {r['pearson']:.2f} |")
    return lines


def write_report(method, run_dir: Path, summary: dict) -> Path:
    """Write the plots and ``report.md``; returns the report's path."""
    run_dir = Path(run_dir)
    plots = run_dir / "plots"
    plots.mkdir(exist_ok=True)
    snaps = _read_snapshots(run_dir)
    plot_loss(run_dir, plots / "loss.png")
    figures = [("Training loss", "loss.png")]
    if snaps:
        plot_histograms(snaps, plots / "similarity_histograms.png")
        plot_align_uniform(snaps, plots / "alignment_uniformity.png")
        figures += [
            (
                "Positive / negative cosine similarity of fixed probe pairs",
                "similarity_histograms.png",
            ),
            ("Alignment-uniformity trajectory", "alignment_uniformity.png"),
        ]
    if method.y_test is not None:  # labelled recipes (not the user's own pairs)
        feats = {
            name: method.features(name)["test"].numpy()
            for name in ("trained", "random_init", method.input_name)
        }
        plot_projection(
            feats, method.y_test.numpy(), plots / "projection.png", seed=method.cfg.seed % 2**32
        )
        figures.append(("t-SNE of the test features, coloured by label", "projection.png"))

    cfg = method.cfg
    res = summary["eval"]
    lines = [
        f"# Run `{run_dir.name}`: recipe `{cfg.recipe}`",
        "",
        f"Method `{cfg.method}`, loss `{cfg.loss}` {json.dumps(cfg.loss_params)}, "
        f"{summary.get('steps', '?')} steps of batch {cfg.batch_size}, seed {cfg.seed}.",
    ]
    if "final_loss" in summary:
        lines.append(f"Final training loss {summary['final_loss']:.4f}.")
    if "train_seconds" in summary:
        lines.append(
            f"Training took {summary['train_seconds']:.1f} s "
            f"({summary['samples_per_s']:.0f} samples/s end to end)."
        )
    if "representation" in res:
        lines += [
            "",
            "## Evaluation against baselines from the same run",
            "",
            f"`trained` is the encoder after training, `random_init` the same encoder before "
            f"it, `{method.input_name}` the raw input. Same split, same kNN (temperature 0.07) "
            "and linear-probe protocols.",
            "",
            *_table(res),
        ]
    lines += [
        "",
        f"Alignment of the probe pairs after training: {res['probe_pairs']['alignment']:.3f}.",
    ]
    if "held_out" in res:  # method pairs
        where = "held-out pairs" if res["held_out"] else "first training pairs (holdout = 0)"
        source = "the docstring task" if cfg.task else f"`{cfg.data}`"
        lines += [
            "",
            f"### Anchors retrieving their positives ({where} of {source})",
            "",
            "`random_init` is the model before fine-tuning, `trained` after it.",
            "",
            "| model | pairs | R@1 | R@10 | MRR@10 | mean rank |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in res["retrieval"].items():
            extra = " | ".join(f"{r[k]:.3f}" if k in r else "-" for k in ("recall@10", "mrr@10"))
            lines.append(
                f"| {name} | {r['pairs']} | {r['recall@1']:.3f} | {extra} | {r['mean_rank']:.1f} |"
            )
        if "eval_data" in res:
            lines += _eval_data_table(res["eval_data"], cfg)
    elif "retrieval" in res:
        lines += [
            "",
            "### Image -> sinogram retrieval (test split)",
            "",
            "| encoder | R@1 | R@5 | R@10 | MRR@10 | nDCG@10 | mean rank | modality gap "
            "| zero-shot |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in res["retrieval"].items():
            lines.append(
                f"| {name} | {r['recall@1']:.3f} | {r['recall@5']:.3f} | {r['recall@10']:.3f} | "
                f"{r['mrr@10']:.3f} | {r['ndcg@10']:.3f} | {r['mean_rank']:.1f} | "
                f"{r['modality_gap']:.3f} | {res['zero_shot'][name]:.1f} % |"
            )
    if "sts_spearman" in res:
        lines += [
            "",
            "### Similarity judgements (Spearman x 100) and isotropy",
            "",
            "| encoder | Spearman | token isotropy |",
            "|---|---|---|",
        ]
        for name, v in res["sts_spearman"].items():
            iso = res.get("isotropy", {}).get(name)
            lines.append(f"| {name} | {v:.1f} | {'' if iso is None else f'{iso:.3f}'} |")
    lines += ["", "## Plots", ""]
    for title, fname in figures:
        lines += [f"### {title}", "", f"![{title}](plots/{fname})", ""]
    lines += [
        "## Reproduce",
        "",
        "```",
        f"contrastkit train --recipe {cfg.recipe} --name {run_dir.name}"
        + (f" --set data={json.dumps(cfg.data)}" if cfg.method == "pairs" and cfg.data else ""),
        f"contrastkit eval --checkpoint {run_dir}",
        "```",
        "",
        "Files: `config.json` (the configuration it ran with), `metrics.json`, `train_log.csv`, "
        "`snapshots.jsonl`, `tensorboard/`, `checkpoints/`.",
    ]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
