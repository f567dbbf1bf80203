"""`spotdiff evaluate --predictions FILE`: score generated answers.

FILE is JSONL, one object per question with `answer` (the reference) and `prediction` (and
optionally `question`, for a per-question-form breakdown) — what `spotdiff train` writes as
test_predictions.jsonl. Prints one JSON object (models/metrics.py: BLEU-1..4, METEOR, ROUGE-L,
CIDEr, change_precision/recall/f1, exact match, intervals, per-template breakdown)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pipelines.commands.common import UserError, params_for, user_errors


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


def headline(report: dict, out: Path) -> str:
    """Three lines of what a person looks at first; the whole report is in `out`."""
    ci = report.get("ci95", {}).get("change_f1")
    ci_text = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
    return (f"wrote {out}: {report['n']} answers\n"
            f"change-F1 {report['change_f1']:.3f}{ci_text}, precision {report['change_precision']:.3f}, "
            f"recall {report['change_recall']:.3f} (added {report.get('change_recall_added', 0):.2f} / "
            f"missing {report.get('change_recall_missing', 0):.2f} / level {report.get('change_recall_level', 0):.2f})\n"
            f"exact match {report['exact_match']:.3f}, CIDEr {report.get('CIDEr', float('nan')):.2f}, "
            f"BLEU-4 {report.get('BLEU-4', float('nan')):.3f}, parse rate {report.get('prediction_parse_rate', float('nan')):.3f}")


def register(app: typer.Typer) -> None:
    @app.command()
    def evaluate(
        predictions: Path = typer.Option(..., "--predictions", help="JSONL with `answer` and `prediction` per line"),
        out: Path = typer.Option(None, "--out", help="also write the JSON here (e.g. metrics.json)"),
        bootstrap: int = typer.Option(None, help="bootstrap resamples for the 95 % intervals (0: none)"),
        seed: int = typer.Option(None, help="bootstrap seed"),
        profile: str = typer.Option(None, help="params.yaml profile (default: its `profile:`)"),
        summary: bool = typer.Option(False, "--summary", help="with --out: print a few headline lines, "
                                                              "not the whole JSON (the main job's terminal)"),
    ) -> None:
        """Score predictions with the papers' metrics plus change-level F1; prints one JSON object."""
        with user_errors():
            params = params_for(profile)["evaluate"]
            records = read_predictions(predictions)
            from models.metrics import score_predictions

            questions = [r.get("question", "") for r in records] if all("question" in r for r in records) else None
            qtypes = ([r["question_type"] for r in records]
                      if all(isinstance(r.get("question_type"), str) for r in records) else None)
            report = score_predictions(
                [r["prediction"] for r in records], [r["answer"] for r in records], questions,
                question_types=qtypes,
                n_boot=params["bootstrap"] if bootstrap is None else bootstrap,
                seed=params["seed"] if seed is None else seed)
            text = json.dumps(report, indent=2, sort_keys=True)
            if out is not None:
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(text + "\n")
            if summary and out is not None:
                typer.echo(headline(report, out))
            else:
                typer.echo(text)
