"""A user's mistake in a Dagster run reads as it does in the CLI and the DVC stages: one line (the
Failure's description, what the UI shows first) and no retry, instead of a Python traceback. An
internal error is left alone: its traceback is what the run log is for."""

from __future__ import annotations

import functools
import inspect

import dagster as dg

from pipelines.errors import USER_MISTAKES


def _failure(e: Exception) -> dg.Failure:
    line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return dg.Failure(description=line, allow_retries=False)


def one_line_failures(fn):
    """Wrap an asset or check body (plain or generator) so that a user mistake becomes a
    dg.Failure whose description is the one line the CLI would print."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except USER_MISTAKES as e:
                raise _failure(e) from None
        return generator

    @functools.wraps(fn)
    def plain(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_MISTAKES as e:
            raise _failure(e) from None
    return plain
