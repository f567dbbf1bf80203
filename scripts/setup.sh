#!/usr/bin/env bash
# Idempotent set-up: project venv (.venv), DVC in its own tool venv (.venv-dvc), Java for
# pycocoevalcap's METEOR/PTB tokenizer, Chromium for the Dagster UI test. Re-running it
# is cheap: each step is skipped when the stamp of what it installed matches.
#
# Why two venvs: DVC pulls hydra/omegaconf, which pin antlr4-python3-runtime 4.9, and Dagster's
# asset-selection parser needs antlr 4.13 (`dagster asset materialize --select` fails on 4.9),
# while `dvc exp run -S` fails on 4.13 ("Could not deserialize ATN"). DVC is a CLI like git and
# our code never imports it, so it lives in .venv-dvc and .venv/bin/dvc links to it.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
DVC_SPEC='dvc[s3]==3.67.1'
UV_SPEC='uv==0.13.9'

need_java() {
  if ! command -v java >/dev/null 2>&1; then
    echo "[setup] Java not found (pycocoevalcap needs it); installing default-jre-headless" >&2
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jre-headless >/dev/null
    else
      echo "[setup] please install a Java runtime (e.g. apt-get install default-jre-headless)" >&2; exit 1
    fi
  fi
}

need_chromium() {
  # headless Chromium: the Dagster UI test clicks "Materialize all" in it (Playwright) and takes the
  # README's picture of the asset graph
  if ! command -v chromium >/dev/null 2>&1; then
    echo "[setup] Chromium not found (the Dagster UI test drives it); installing chromium" >&2
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
      echo "[setup] please install Chromium (e.g. apt-get install chromium)" >&2; exit 1
    fi
  fi
}

stamp_of() { cat "$@" | sha256sum | cut -c1-16; }

# pip's output (hundreds of lines on a first run: index warnings, build-backend notices) goes to
# a log file; the terminal gets one line per step, and the log's tail if a step fails.
mkdir -p runs/logs
SETUP_LOG=runs/logs/setup.log
logged() {
  if ! "$@" >>"$SETUP_LOG" 2>&1; then
    echo "[setup] failed: $* (last lines of $SETUP_LOG below)" >&2
    tail -n 20 "$SETUP_LOG" >&2
    exit 1
  fi
}

# The installer is uv, a pip-compatible one: from a fresh clone on this 2-core box both venvs take
# 17 s with its cache warm and ~45 s cold, against 3:00 with pip (docs/benchmarks.md "Set-up"),
# plus ~40 s compiling bytecode (below).
# pyproject.toml pins torch/torchvision exactly, so it installs the versions pip would. uv reads
# no pip.conf: behind a private index set UV_INDEX_URL (or UV_DEFAULT_INDEX) as you set pip's.
[ -x .venv/bin/python ] || "$PY" -m venv .venv
[ -x .venv/bin/uv ] || logged .venv/bin/pip install -q "$UV_SPEC"
# --compile-bytecode: uv leaves .pyc to the first import, and where PYTHONDONTWRITEBYTECODE is set
# (this box's shell sets it) no import ever writes one: every process then compiled torch, Ray,
# MLflow and Dagster from source again (a smoke `spotdiff train` 109 s, 51 s with bytecode; every
# Ray worker and Dagster run process pays it too). Compiling once here costs ~40 s.
uv_install() { logged .venv/bin/uv pip install -q --compile-bytecode --python "$@"; }
want=$(stamp_of pyproject.toml scripts/setup.sh)
if [ "$(cat .venv/.spotdiff-stamp 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing spotdiff into .venv (first run: a minute, torch is ~3.5 GB; log: $SETUP_LOG)" >&2
  uv_install .venv/bin/python -e '.[dev]'
  # The DRR renderer only: see the comment at the diffdrr deps in pyproject.toml.
  uv_install .venv/bin/python --no-deps 'diffdrr==0.6.1'
  echo "$want" > .venv/.spotdiff-stamp
fi

DVC_STAMP="$DVC_SPEC with bytecode"
if [ "$(cat .venv-dvc/.spotdiff-stamp 2>/dev/null)" != "$DVC_STAMP" ]; then
  echo "[setup] installing DVC into its own tool venv .venv-dvc" >&2
  [ -x .venv-dvc/bin/python ] || "$PY" -m venv .venv-dvc
  uv_install .venv-dvc/bin/python "$DVC_SPEC"
  echo "$DVC_STAMP" > .venv-dvc/.spotdiff-stamp
fi
ln -sf ../../.venv-dvc/bin/dvc .venv/bin/dvc

need_java
need_chromium
