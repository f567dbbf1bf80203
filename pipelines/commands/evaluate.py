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


def read_predictions(path: Path) -> list[dict]:
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    records = []
    with path.open() as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{line_no}: not valid JSON ({e.msg})") from e
            if not isinstance(rec, dict):
                raise UserError(f"{path}:{line_no}: expected a JSON object")
            for field in ("answer", "prediction"):
                if not isinstance(rec.get(field), str):
                    raise UserError(f"{path}:{line_no}: field {field!r} missing or not a string")
            records.append(rec)
    if not records:
        raise UserError(f"{path}: no predictions (empty file)")
    return records


def register(app: typer.Typer) -> None:
    @app.command()
    def evaluate(
        predictions: Path = typer.Option(..., "--predictions", help="JSONL with `answer` and `prediction` per line"),
        out: Path = typer.Option(None, "--out", help="also write the JSON here (e.g. metrics.json)"),
        bootstrap: int = typer.Option(None, help="bootstrap resamples for the 95 % intervals (0: none)"),
        seed: int = typer.Option(None, help="bootstrap seed"),
        profile: str = typer.Option(None, help="params.yaml profile (default: its `profile:`)"),
    ) -> None:
        """Score predictions with the papers' metrics plus change-level F1; prints one JSON object."""
        with user_errors():
            params = params_for(profile)["evaluate"]
            records = read_predictions(predictions)
            from models.metrics import score_predictions

            questions = [r.get("question", "") for r in records] if all("question" in r for r in records) else None
            report = score_predictions(
                [r["prediction"] for r in records], [r["answer"] for r in records], questions,
                n_boot=params["bootstrap"] if bootstrap is None else bootstrap,
                seed=params["seed"] if seed is None else seed)
            text = json.dumps(report, indent=2, sort_keys=True)
            if out is not None:
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(text + "\n")
            typer.echo(text)
