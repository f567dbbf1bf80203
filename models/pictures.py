"""Pictures of what a model does, as PNG files: the `spotdiff ask --heatmap` figure, the per-
evaluation sample sheet (pair, residual, Grad-CAM, question, ground truth vs prediction) and the
confusion matrix of finding changes. Pure matplotlib; MLflow/Dagster adapters log the files."""

from __future__ import annotations

import textwrap
import warnings

from pathlib import Path

import numpy as np

from assets.diffvqa.grammar import ChangeSet
from assets.shards import decode_image
from models.answer import Answerer, prepare_pair
from models.data import open_parquet, shard_paths
from models.metrics import parse_prediction

KINDS = ("added", "missing", "level", "unchanged")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _row(axes, answerer: Answerer, main, ref, residual, question: str, answer: str) -> None:
    cam = answerer.gradcam(main, ref, residual, question, answer)
    res = residual[0, 0].numpy()
    panels = [(main[0, 0].numpy(), "gray", (0, 1), "main"), (ref[0, 0].numpy(), "gray", (0, 1), "reference"),
              (res, "seismic", (-1, 1), "residual (main - ref)")]
    for ax, (img, cmap, (lo, hi), title) in zip(axes, panels):
        ax.imshow(img, cmap=cmap, vmin=lo, vmax=hi)
        ax.set_title(title, fontsize=8)
    axes[3].imshow(res, cmap="gray", vmin=-1, vmax=1)
    axes[3].imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    axes[3].set_title("Grad-CAM on the residual encoder" if answerer.model.residual_encoder is not None
                      else "Grad-CAM on the image encoder", fontsize=8)
    for ax in axes:
        ax.axis("off")


def ask_heatmap(answerer: Answerer, tensors: tuple, question: str, answer: str, path: str | Path) -> Path:
    """tensors: the (main, ref, residual) the answer was computed from (Answerer.ask's inputs)."""
    plt = _plt()
    # a change list runs to ~200 characters: wrapped to the figure's width, not cut at its edges
    text = "\n".join(textwrap.wrap(f"Q: {question}", 150) + textwrap.wrap(f"A: {answer}", 150))
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.4 + 0.18 * text.count("\n")))
    _row(axes, answerer, *tensors, question, answer)
    fig.suptitle(text, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def read_pairs(residuals_root: str | Path, pair_ids: list[str],
               options: dict | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """pair_id -> (main, ref) uint8 from the shards (the stored, preprocessed images); local or
    s3:// roots alike (assets/storage.py)."""
    paths, size = shard_paths(residuals_root, options)
    want, out = set(pair_ids), {}
    for path in paths:
        table = open_parquet(path, options).read(columns=["pair_id", "main", "ref"])
        for row in table.to_pylist():
            if row["pair_id"] in want and row["pair_id"] not in out:
                out[row["pair_id"]] = tuple((decode_image(row[c], size) * 255).round().astype(np.uint8)
                                            for c in ("main", "ref"))
    return out


def sample_sheet(answerer: Answerer, residuals_root: str | Path, predictions: list[dict],
                 path: str | Path, n: int = 4, options: dict | None = None) -> Path:
    """predictions: test records (pair_id, question, answer, prediction); one row per pair."""
    plt = _plt()
    seen, rows = set(), []
    for r in predictions:
        if r["pair_id"] not in seen:
            seen.add(r["pair_id"])
            rows.append(r)
        if len(rows) == n:
            break
    images = read_pairs(residuals_root, [r["pair_id"] for r in rows], options)
    rows = [r for r in rows if r["pair_id"] in images]
    fig, axes = plt.subplots(max(len(rows), 1), 4, figsize=(12, 3.4 * max(len(rows), 1)), squeeze=False)
    for ax_row, r in zip(axes, rows):
        main, ref = images[r["pair_id"]]
        _row(ax_row, answerer, *prepare_pair(main, ref, answerer.prep), r["question"], r["prediction"])
        ax_row[0].text(0, -0.08, f"{r['pair_id']}  Q: {r['question']}\ntruth: {r['answer']}\n"
                       f"pred:  {r['prediction']}", transform=ax_row[0].transAxes, fontsize=7,
                       va="top", family="monospace")
    with warnings.catch_warnings():  # a long answer under a row cannot fit: the layout still holds
        warnings.filterwarnings("ignore", message="Tight layout not applied", category=UserWarning)
        fig.tight_layout(h_pad=6.0)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def _status(changes: ChangeSet | None) -> dict[str, str]:
    if changes is None:
        return {}
    out = {f: "added" for f in changes.added}
    out.update({f: "missing" for f in changes.missing})
    out.update({c.finding: "level" for c in changes.levels})
    return out


def change_confusion(predictions: list[dict]) -> np.ndarray:
    """4x4 counts, rows = truth, columns = prediction, over (question, finding) for every finding
    either side names: added / missing / level change / unchanged."""
    m = np.zeros((len(KINDS), len(KINDS)), dtype=int)
    for r in predictions:
        t, p = _status(parse_prediction(r["answer"])), _status(parse_prediction(r["prediction"]))
        for f in set(t) | set(p):
            m[KINDS.index(t.get(f, "unchanged")), KINDS.index(p.get(f, "unchanged"))] += 1
    return m


def confusion_png(matrix: np.ndarray, path: str | Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4))
    ax.imshow(matrix, cmap="Blues")
    for i in range(len(KINDS)):
        for j in range(len(KINDS)):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(KINDS)), KINDS, rotation=30)
    ax.set_yticks(range(len(KINDS)), KINDS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title("finding changes (test)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
