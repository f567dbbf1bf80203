"""The Dagster code location: `dagster dev` (repo root) loads this via [tool.dagster] in
pyproject.toml. Each domain's defs module wires its assets to resources; this file only merges
them, like dagster-open-platform's definitions.py."""

import pipelines.env  # noqa: F401  (telemetry off before Dagster loads)

import dagster as dg

from pipelines.defs import automation, data, model, registry

defs = dg.Definitions.merge(data.defs, model.defs, registry.defs, automation.defs)
