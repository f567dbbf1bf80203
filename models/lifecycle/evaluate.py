"""Score a predictions file: the one evaluation of the CLI (`spotdiff evaluate`), the DVC stage
`evaluate` and the Dagster asset `evaluation`, written to one metrics file (evaluate.metrics_file).

A file is JSONL, one object per question with `answer` (the reference) and `prediction` (and
optionally `question` and `question_type`, for the per-form and per-type breakdowns) — what
training writes as test_predictions.jsonl. Training already scores its test predictions once
(test_report.json beside them, with the file's sha256 and the bootstrap settings): when those
match, that report is the evaluation, and METEOR's Java aligner does not run a second time."""

from __future__ import annotations

import json
from pathlib import Path

from assets.params import UserError, resolve_path
from models.metrics import SCORED_WITH, scored_with


# A line is one question's record (the longest Diff-VQA answer is ~360 bytes, a prediction at
# most max_answer_len tokens): 16 KiB is ample. The bound is enforced while reading, so a huge
# line never reaches memory whole, nor METEOR, whose Java aligner dies on a 1 MB sentence.
MAX_LINE_BYTES = 16 * 1024
TEXT_FIELDS = ("answer", "prediction", "question")  # `question` optional


def _type_name(value) -> str:
    return "null" if value is None else type(value).__name__


def read_predictions(path: Path) -> list[dict]:
    """Every user mistake in FILE is one UserError naming FILE:LINE and the field: checked here,
    so nothing malformed reaches the scorers (whose errors name neither)."""
    if not path.is_file():
        raise UserError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
    records = []
    with path.open("rb") as f:
        line_no = 0
        while raw := f.readline(MAX_LINE_BYTES + 1):
            line_no += 1
            content = raw.rstrip(b"\r\n")
            if len(content) > MAX_LINE_BYTES:
                raise UserError(f"{path}:{line_no}: line longer than {MAX_LINE_BYTES} bytes "
                                "(one prediction record is a few hundred)")
            try:
                line = content.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{path}:{line_no}: not UTF-8 (byte 0x{content[e.start]:02x} "
                                f"at column {e.start + 1})") from e
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{line_no}: not valid JSON ({e.msg})") from e
            if not isinstance(rec, dict):
                raise UserError(f"{path}:{line_no}: expected a JSON object")
            for field in TEXT_FIELDS:
                if field not in rec and field != "question":
                    raise UserError(f"{path}:{line_no}: field {field!r} missing")
                if field in rec and not isinstance(rec[field], str):
                    raise UserError(f"{path}:{line_no}: field {field!r} is {_type_name(rec[field])}, not a string")
            # The reference is what every metric counts against; with no word in it CIDEr's
            # document frequencies are empty (ValueError) and BLEU/METEOR score nothing.
            if not any(ch.isalnum() for ch in rec["answer"]):
                raise UserError(f"{path}:{line_no}: field 'answer' has no word "
                                f"({rec['answer']!r}); a reference answer is needed to score against")
            records.append(rec)
    if not records:
        raise UserError(f"{path}: no predictions (empty file)")
    return records


def _report_of_training(predictions: Path, key: dict) -> dict | None:
    """Training's own report of exactly this file and these settings, if it is beside it."""
    path = predictions.parent / "test_report.json"
    if not path.is_file() or path.stat().st_size > 64 * 1024 * 1024:
        return None
    try:
        report = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(report, dict) or report.get(SCORED_WITH) != key:
        return None
    return {k: v for k, v in report.items() if k != SCORED_WITH}


def evaluate(params: dict, predictions: Path | None = None, out: Path | None = None,
             n_boot: int | None = None, seed: int | None = None) -> tuple[dict, Path | None]:
    """Score `predictions` and write the report to `out`. Without `predictions` this is the
    pipeline's evaluation: train.output_dir/test_predictions.jsonl into evaluate.metrics_file (a
    file a user scores by hand is written only where --out says). Returns (report, out)."""
    from models.metrics import score_predictions

    e = params["evaluate"]
    if predictions is None:
        predictions = Path(resolve_path(params["train"]["output_dir"])) / "test_predictions.jsonl"
        out = out or Path(resolve_path(e["metrics_file"]))
    n_boot = e["bootstrap"] if n_boot is None else n_boot
    seed = e["seed"] if seed is None else seed
    records = read_predictions(predictions)
    report = _report_of_training(predictions, scored_with(predictions, n_boot, seed))
    if report is None:
        questions = [r.get("question", "") for r in records] if all("question" in r for r in records) else None
        qtypes = ([r["question_type"] for r in records]
                  if all(isinstance(r.get("question_type"), str) for r in records) else None)
        report = score_predictions([r["prediction"] for r in records], [r["answer"] for r in records],
                                   questions, question_types=qtypes, n_boot=n_boot, seed=seed)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report, out
