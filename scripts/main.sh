#!/usr/bin/env bash
# The main job on the embedded default: set up, then `dvc repro` the pipeline in dvc.yaml.
# Extra arguments go to `dvc repro` (e.g. a stage name). Profile: SPOTDIFF_PROFILE=smoke for a
# quick run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
if [ -n "${SPOTDIFF_PROFILE:-}" ]; then
  # DVC records params.yaml, not the environment: put the profile there for this run, so
  # dvc.lock says which profile ran (the next run of another profile re-runs what differs),
  # then put params.yaml back as it was.
  [[ "${SPOTDIFF_PROFILE}" =~ ^[A-Za-z0-9_-]+$ ]] || { echo "SPOTDIFF_PROFILE=${SPOTDIFF_PROFILE}: not a profile name" >&2; exit 2; }
  cp params.yaml .params.yaml.main-sh
  trap 'mv -f .params.yaml.main-sh params.yaml' EXIT
  sed -i "s/^profile: .*/profile: ${SPOTDIFF_PROFILE}/" params.yaml
  grep -q "^profile: ${SPOTDIFF_PROFILE}\$" params.yaml || { echo "params.yaml has no top-level profile: line" >&2; exit 2; }
fi
# each pipeline command prints a header line with its name (dvc repro -q keeps DVC's own quiet)
export SPOTDIFF_STAGE_HEADERS=1
started=$(date +%s)
status=0
# -q: DVC's own lines (stage banners, lock-file updates) stay off the terminal; each stage
# announces itself, and the table below says what ran and what was up to date
dvc repro -q "$@" || status=$?
# one table of what ran, how long, the rows and the results, then the champion (also after a failure)
spotdiff summary --since "$started" || true
exit "$status"
