"""`spotdiff train [--profile smoke] [--set train.epochs=3 ...] [--run-name NAME]`: one Ray Train
run through models.lifecycle.train — the same call as the Dagster asset `real_model` and the DVC
stage `train`."""

from __future__ import annotations

import json

import typer

from assets.params import parse_sets
from pipelines.commands.common import params_for, user_errors


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        profile: str = typer.Option(None, help="params.yaml profile (default: params' `profile`)"),
        set_: list[str] = typer.Option([], "--set", help="override, e.g. train.epochs=3 (repeatable)"),
        run_name: str = typer.Option(None, help="reuse a run name to resume that run"),
        summary: bool = typer.Option(False, "--summary", help="two headline lines, not the whole JSON "
                                                              "(the main job's terminal)"),
    ) -> None:
        """Train ReAl on Ray Train; log to MLflow; write the best checkpoint and metrics.json."""
        from models.lifecycle.train import train as train_model

        with user_errors():
            result = train_model(params_for(profile, parse_sets(set_) or None), run_name)
        if summary:
            v = result.val_metrics
            if result.reused:
                typer.echo(f"up to date: {result.output_dir} holds the model of the same data, params and "
                           "code, kept with its MLflow run (--set train.reuse=false trains anyway)")
            typer.echo(f"{'kept' if result.reused else 'trained'} {result.run_name}: {result.steps} steps, "
                       f"best epoch {v.get('epoch')} "
                       f"(validation change-F1 {v.get('val_change_f1', float('nan')):.3f}), MLflow run "
                       f"{result.mlflow_run_id}\nbest checkpoint: {result.best_checkpoint}")
            return
        typer.echo(json.dumps({"run_name": result.run_name, "mlflow_run_id": result.mlflow_run_id,
                               "reused": result.reused, "best_checkpoint": str(result.best_checkpoint),
                               "steps": result.steps, "test": result.test_metrics}, indent=2))
