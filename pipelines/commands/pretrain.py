"""`spotdiff pretrain`: encoder pretraining through models.lifecycle.pretrain — the same call as
the DVC stage `pretrain` and the Dagster asset `pretrained_encoder`."""

from __future__ import annotations

import json

import typer

from assets.params import parse_sets
from pipelines.commands.common import params_for, user_errors


def register(app: typer.Typer) -> None:
    @app.command()
    def pretrain(
        profile: str = typer.Option(None, help="params.yaml profile (default: params' `profile`)"),
        set_: list[str] = typer.Option([], "--set", help="override, e.g. pretrain.epochs=1 (repeatable)"),
    ) -> None:
        """Pretrain the image encoder on single images (finding presence and level)."""
        from models.lifecycle.pretrain import pretrain as pretrain_encoder

        with user_errors():
            report = pretrain_encoder(params_for(profile, parse_sets(set_) or None))
        # one line on the main job's terminal (the full report is the stage's note, pretrain.json)
        typer.echo(f"pretrain skipped: {report['skipped']}" if "skipped" in report
                   else json.dumps(report, sort_keys=True))
