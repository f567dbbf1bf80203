"""The `spotdiff` command line: `spotdiff --help`.

Each command is a thin adapter over a domain function (assets/, models/); the same functions back
the Dagster assets (pipelines/defs/) and the DVC stages (dvc.yaml). Commands live one concern per
module under pipelines/commands/ and import their heavy dependencies inside the command, so
`spotdiff --help` stays fast."""

from __future__ import annotations

import pipelines.env  # noqa: F401  (telemetry off first)

import typer

from pipelines.commands import ablate, data, evaluate, pretrain, registry, synth, train

app = typer.Typer(help="spotdiff: difference VQA on chest X-rays (ReAl).", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)

for module in (synth, data, pretrain, train, ablate, evaluate, registry):
    module.register(app)


if __name__ == "__main__":
    app()
