"""The Dagster code location: `dagster dev` (repo root) loads this via [tool.dagster] in
pyproject.toml. Each domain's defs module wires its assets to resources; this file only merges
them, like dagster-open-platform's definitions.py."""

import pipelines.env  # noqa: F401  (telemetry off before Dagster loads)

import dagster as dg

from pipelines.defs import automation, data, model, registry

# Every step of a run in the run's own process. Dagster's default (a process per step) paid 3-5 s
# of worker start-up and imports per step on the 2-core box — most of a residual partition's run
# and 40 of the first ingestion run's 51 s — while the steps of one run here mostly wait on each
# other anyway; the heavy work has its own workers (Ray for training, a thread pool for residuals).
# A cluster keeps one pod per run (K8sRunLauncher), whatever the executor.
defs = dg.Definitions.merge(data.defs, model.defs, registry.defs, automation.defs,
                            dg.Definitions(executor=dg.in_process_executor))
