"""`spotdiff ablate [--profile P] [--seeds 0 1] [--variants baseline ...] [--report-only --group G]`

Trains every ablation variant (models/ablation.py) with the same params and seeds through
models.lifecycle.ablate, tags the MLflow runs `ablation=<group>`, then writes docs/results.md and
its bar chart from those runs."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import typer

from assets.params import parse_sets, repo_root
from pipelines.commands.common import params_for, user_errors


def register(app: typer.Typer) -> None:
    @app.command()
    def ablate(
        profile: str = typer.Option(None, help="params.yaml profile"),
        seeds: list[int] = typer.Option([0], "--seeds", help="repeatable: --seeds 0 --seeds 1"),
        variants: list[str] = typer.Option([], "--variants", help="subset of the variants (default: all)"),
        set_: list[str] = typer.Option([], "--set", help="override for every variant, e.g. train.epochs=3"),
        group: str = typer.Option(None, help="ablation group id (default: a new timestamp)"),
        report_only: bool = typer.Option(False, help="only rebuild the report from MLflow"),
        out: Path = typer.Option(Path("docs/results.md"), help="the results page to write"),
    ) -> None:
        """Train the paper's ablation variants and write docs/results.md from their MLflow runs."""
        from models.ablation import VARIANTS
        from models.lifecycle.ablate import run_variants, write_report

        with user_errors():
            params = params_for(profile, parse_sets(set_) or None)
            group = group or datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
            if not report_only:
                run_variants(params, seeds, variants or list(VARIANTS), group,
                             log=lambda line: typer.echo(line, err=True))
            path = write_report(params, group, repo_root() / out)
        typer.echo(str(path))
