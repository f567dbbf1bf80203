"""`spotdiff evaluate [--predictions FILE] [--out FILE]`: score generated answers through
models.lifecycle.evaluate — the same call as the DVC stage `evaluate` and the Dagster asset
`evaluation`, writing the same metrics file (evaluate.metrics_file). FILE is JSONL with `answer`
and `prediction` per line (what training writes as test_predictions.jsonl)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from pipelines.commands.common import params_for, user_errors


def headline(report: dict, out: Path) -> str:
    """Three lines of what a person looks at first (a fourth with the other question types' scores);
    the whole report is in `out`."""
    from models.metrics import TYPE_METRIC

    ci = report.get("ci95", {}).get("change_f1")
    ci_text = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
    others = {t: r for t, r in sorted(report.get("per_type", {}).items()) if t != "difference"}
    per_type = ("\nother types: " + ", ".join(f"{t} {TYPE_METRIC[t].replace('_', '-')} {r[TYPE_METRIC[t]]:.3f}"
                                             for t, r in others.items() if TYPE_METRIC.get(t) in r)
                if others else "")
    n = (f"{report['n_all_types']} answers, {report['n']} of them difference" if "n_all_types" in report
         else f"{report['n']} answers")
    return (f"wrote {out}: {n}\n"
            f"change-F1 {report['change_f1']:.3f}{ci_text}, precision {report['change_precision']:.3f}, "
            f"recall {report['change_recall']:.3f} (added {report.get('change_recall_added', 0):.2f} / "
            f"missing {report.get('change_recall_missing', 0):.2f} / level {report.get('change_recall_level', 0):.2f})\n"
            f"exact match {report['exact_match']:.3f}, CIDEr {report.get('CIDEr', float('nan')):.2f}, "
            f"BLEU-4 {report.get('BLEU-4', float('nan')):.3f}, parse rate {report.get('prediction_parse_rate', float('nan')):.3f}"
            + per_type)


def register(app: typer.Typer) -> None:
    @app.command()
    def evaluate(
        predictions: Path = typer.Option(None, "--predictions",
                                         help="JSONL with `answer` and `prediction` per line "
                                              "(default: train.output_dir/test_predictions.jsonl)"),
        out: Path = typer.Option(None, "--out", help="also write the report here (without --predictions: evaluate.metrics_file)"),
        bootstrap: int = typer.Option(None, help="bootstrap resamples for the 95 % intervals (0: none)"),
        seed: int = typer.Option(None, help="bootstrap seed"),
        profile: str = typer.Option(None, help="params.yaml profile (default: its `profile:`)"),
        summary: bool = typer.Option(False, "--summary", help="print a few headline lines, not the whole "
                                                              "JSON (the main job's terminal)"),
    ) -> None:
        """Score predictions with the papers' metrics plus change-level F1; writes the metrics file."""
        from models.lifecycle.evaluate import evaluate as evaluate_predictions

        with user_errors():
            report, path = evaluate_predictions(params_for(profile), predictions, out, bootstrap, seed)
        typer.echo(headline(report, path) if summary and path else json.dumps(report, indent=2, sort_keys=True))
