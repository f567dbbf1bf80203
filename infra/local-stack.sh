#!/usr/bin/env bash
# The production topology as local processes (Postgres, SeaweedFS S3, MLflow server, Ray head +
# worker, Dagster code server + webserver + daemon), no Docker. See infra/local_stack.py.
#   infra/local-stack.sh up | down | status | env     (eval "$(infra/local-stack.sh env)")
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py="${PYTHON:-$here/../.venv/bin/python}"
exec "$py" "$here/local_stack.py" "$@"
