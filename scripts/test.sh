#!/usr/bin/env bash
# Set up, then run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
# Two workers, one test file each at a time (a file's module fixtures are built once): the long
# end-to-end files mostly wait on services, so the other worker runs the rest meanwhile.
# SPOTDIFF_TEST_WORKERS=0 runs everything in this process (what a debugger wants).
workers=${SPOTDIFF_TEST_WORKERS:-2}
set +e
python -m pytest -n "$workers" --dist loadfile --no-loadscope-reorder "$@"
rc=$?
set -e
# pytest's exit 5 means no test ran: that is a failure here, never a pass.
if [ "$rc" = 5 ]; then echo "no tests ran" >&2; exit 1; fi
exit "$rc"
