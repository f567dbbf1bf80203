"""What every command shares: reading params.yaml and turning a user mistake into one clear
line on stderr and exit code 2, instead of a traceback."""

from __future__ import annotations

import contextlib
from typing import Iterator

import typer
from rich.console import Console

from assets.params import UserError, load_params

__all__ = ["UserError", "err_console", "params_for", "user_errors"]

# soft_wrap: an error is one line whatever the terminal width (CI has no TTY and wraps at 80).
err_console = Console(stderr=True, soft_wrap=True)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except Exception as e:
        from pipelines.errors import USER_MISTAKES  # imported here: `spotdiff --help` stays light

        if not isinstance(e, USER_MISTAKES):
            raise
        err_console.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(code=2) from e


def params_for(profile: str | None, overrides: dict | None = None) -> dict:
    return load_params(profile=profile, overrides=overrides)
