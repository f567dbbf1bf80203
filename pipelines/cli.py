"""The `spotdiff` command line: `spotdiff --help`.

Each command is a thin adapter over a domain function (assets/, models/); the same functions back
the Dagster assets (pipelines/defs/) and the DVC stages (dvc.yaml). Commands live one concern per
module under pipelines/commands/ and import their heavy dependencies inside the command, so
`spotdiff --help` stays fast."""

from __future__ import annotations

import pipelines.env  # noqa: F401  (telemetry off first)

import os
import sys
import time

import click
import typer

from pipelines import journal
from pipelines.commands import ablate, data, evaluate, pretrain, registry, summary, synth, train

STAGE_HEADERS_ENV = "SPOTDIFF_STAGE_HEADERS"
app = typer.Typer(help="spotdiff: difference VQA on chest X-rays (ReAl).", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)

for module in (synth, data, pretrain, train, ablate, evaluate, registry, summary):
    module.register(app)


@app.callback()
def _journal(ctx: typer.Context) -> None:
    """Pipeline stages note their wall time and outcome for `spotdiff summary`."""
    started = time.time()
    # one header line per stage in the main job's terminal (scripts/main.sh asks for it; alone,
    # a command's output and a mistake's one line stay as they are)
    if ctx.invoked_subcommand in journal.STAGES and os.environ.get(STAGE_HEADERS_ENV) == "1":
        from rich.console import Console

        Console(stderr=True).rule(f"spotdiff {ctx.invoked_subcommand}", style="dim")

    def close() -> None:  # runs while the command's exception (if any) is still in flight
        error = sys.exc_info()[1]
        ok = error is None or (isinstance(error, (click.exceptions.Exit, SystemExit))
                               and getattr(error, "exit_code", getattr(error, "code", 1)) in (0, None))
        journal.note(ctx.invoked_subcommand or "", started, ok)
    ctx.call_on_close(close)


if __name__ == "__main__":
    app()
