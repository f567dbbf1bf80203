#!/usr/bin/env bash
# The main job on the embedded default: set up, then `dvc repro` the pipeline in dvc.yaml.
# Extra arguments go to `dvc repro` (e.g. a stage name). Profile: SPOTDIFF_PROFILE=smoke for a
# quick run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
dvc repro "$@"
