"""Entry points over the plain-Python domain code in `assets/` and `models/`: the Dagster
definitions, the `spotdiff` CLI and the DVC stage commands. Nothing here holds domain logic."""

from pipelines import env as _env  # noqa: F401  (telemetry off before any framework import)
