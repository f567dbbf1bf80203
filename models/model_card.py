"""The model card of a registered version: what it is, what it was trained on (data version,
DVC hash, git commit, params), how well it does (test metrics with their 95 % intervals, per
question type), what it looks like (the sample sheet), and what it cannot do. Written as the
MLflow model version's description (the registry UI shows it) and as model_card.md beside the
exported model (the Dagster asset links it), so every version explains itself."""

from __future__ import annotations

import json

# What every version of this model shares; measured where docs/results.md says.
KNOWN_LIMITS = (
    "Trained and measured on the embedded dataset unless the data version says otherwise: "
    "rendered radiographs, not patients. Not a medical device; not for clinical use.",
    "Difference answers name findings from a fixed vocabulary of 30 and the level words of "
    "Medical-Diff-VQA; anything else is outside what it can say.",
    "Scores are one training run (one seed); the intervals are bootstrap intervals over the test "
    "questions, not over training seeds.",
)
# The parameters a reader needs to place the model; the full set is on the MLflow run.
KEY_PARAMS = ("profile", "model.backbone", "model.image_size", "model.n_layer", "model.n_embd",
              "model.use_residual", "model.use_rfa", "model.residual_kind", "model.finding_heads",
              "pretrain.epochs", "train.epochs", "train.num_workers", "train.question_types",
              "train.seed", "pairs.question_types")
HEADLINE = ("change_f1", "change_precision", "change_recall", "change_recall_added",
            "change_recall_missing", "change_recall_level", "exact_match", "BLEU-4", "METEOR",
            "ROUGE-L", "CIDEr", "prediction_parse_rate")


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def model_card(name: str, version: str, run_id: str, params_flat: dict, report: dict, val: dict,
               data_version: str, dvc_hash: str | None, git_commit: str, sample_sheet: str | None) -> str:
    """Markdown. report: the evaluation report (models/metrics.py, with ci95 and per_type)."""
    ci = report.get("ci95", {})
    lines = [f"# {name} version {version}", "",
             "ReAl (residual-aware learning) for difference VQA on chest X-rays: given a main and a "
             "reference radiograph and a question, it answers what changed, in the Medical-Diff-VQA "
             "answer grammar.", "",
             "## Provenance", "",
             f"- MLflow run: `{run_id}`", f"- git commit: `{git_commit or 'unknown'}`",
             f"- data version (content hash of the residual shards and pairs): `{data_version or 'unknown'}`",
             f"- DVC hash of the residual shards (dvc.lock): `{dvc_hash or 'not tracked by DVC here'}`", "",
             "| parameter | value |", "|---|---|"]
    lines += [f"| {k} | {json.dumps(params_flat[k]) if isinstance(params_flat[k], list) else params_flat[k]} |"
              for k in KEY_PARAMS if k in params_flat]
    lines += ["", f"## Test metrics ({report.get('n', '?')} questions; 95 % bootstrap intervals)", "",
              "| metric | value | 95 % interval |", "|---|---|---|"]
    for k in HEADLINE:
        if k in report:
            lo_hi = ci.get(k)
            lines.append(f"| {k} | {_fmt(float(report[k]))} | "
                         f"{f'[{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]' if lo_hi else '—'} |")
    if val:
        lines += ["", "Validation (the split promotion compares): "
                  + ", ".join(f"{k} {_fmt(float(v))}" for k, v in sorted(val.items()) if k in HEADLINE
                              or k == "prior_change_f1")]
    per_type = report.get("per_type") or {}
    if per_type:
        from models.metrics import TYPE_METRIC

        lines += ["", "## Per question type", "",
                  "| type | n | headline (95 % CI) | metrics |", "|---|---|---|---|"]
        for qt, row in sorted(per_type.items()):
            metric, lo_hi = TYPE_METRIC.get(qt), row.get("ci95")
            head = (f"{metric} {_fmt(float(row[metric]))}" if metric in row else "—") + (
                f" [{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]" if lo_hi else "")
            rest = ", ".join(f"{k} {_fmt(float(v))}" for k, v in sorted(row.items())
                             if k not in ("n", "ci95", metric))
            lines.append(f"| {qt} | {row.get('n', '?')} | {head} | {rest} |")
    if sample_sheet:
        lines += ["", "## Sample answers", "", f"The sample sheet (pairs, residuals, answers): `{sample_sheet}`"]
    lines += ["", "## Known limits", ""] + [f"- {x}" for x in KNOWN_LIMITS]
    return "\n".join(lines) + "\n"


def dvc_hash(lock_text: str | None, out_path: str) -> str | None:
    """The md5 dvc.lock records for an output path (any stage), or None."""
    import yaml

    if not lock_text:
        return None
    try:
        lock = yaml.safe_load(lock_text) or {}
    except yaml.YAMLError:
        return None
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            if isinstance(out, dict) and out.get("path", "").rstrip("/") == out_path.rstrip("/"):
                return out.get("md5")
    return None
