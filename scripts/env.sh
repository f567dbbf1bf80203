# Sourced by the README commands: the project venv first on PATH, telemetry off, local Ray
# without token auth (pipelines/env.py sets the same for Python entry points).
# shellcheck shell=bash
export PATH="$PWD/.venv/bin:$PATH"
export RAY_USAGE_STATS_ENABLED=0 MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1 \
  DAGSTER_DISABLE_TELEMETRY=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 GX_ANALYTICS_ENABLED=false \
  RAY_AUTH_MODE=disabled DO_NOT_TRACK=1 MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false \
  MLFLOW_LOGGING_LEVEL=WARNING
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_home}"
mkdir -p "$DAGSTER_HOME"
# Dagster reads its telemetry switch only from dagster.yaml (DAGSTER_DISABLE_TELEMETRY is not
# consulted by `dagster dev`), so a fresh DAGSTER_HOME gets one; an existing file is left alone.
[ -f "$DAGSTER_HOME/dagster.yaml" ] || printf 'telemetry:\n  enabled: false\n' > "$DAGSTER_HOME/dagster.yaml"
