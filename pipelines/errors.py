"""What every entry point treats as the user's mistake (a bad path, value, table or file): the
CLI and the DVC stages print it as one line with exit code 2, Dagster as a one-line Failure."""

from assets.ingest import SchemaError
from assets.params import UserError
from assets.storage import FileRefused

USER_MISTAKES: tuple[type[Exception], ...] = (UserError, SchemaError, FileRefused, FileNotFoundError)
