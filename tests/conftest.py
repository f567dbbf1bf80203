"""Shared fixtures. Telemetry off for every test process (the same defaults as the CLI)."""

import pipelines.env  # noqa: F401

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHAIN_FIXTURE = "dagster_chain"  # the fixture of the one training chain (tests/pipelines/dagster_chain.py)


def _uses_the_chain(item) -> bool:
    return CHAIN_FIXTURE in getattr(item, "fixturenames", ())  # directly or through another fixture


def pytest_collection_modifyitems(items):
    """The modules of the training chain run last: its process starts with the session (below) and
    is done, or nearly, by the time they need it."""
    chained = {i.path for i in items if _uses_the_chain(i)}
    items[:] = [i for i in items if i.path not in chained] + [i for i in items if i.path in chained]


@pytest.fixture(scope="session", autouse=True)
def chain_beside(request, tmp_path_factory, _journal_outside_the_checkout):
    """Starts the training chain's process at the first test when the session holds a test of it:
    most of its ~5 min is waiting on Dagster's daemon (a backfill advances on the daemon's fixed
    30 s tick), time the other tests use. Stopped at the end if still running."""
    if not any(_uses_the_chain(i) for i in request.session.items):
        yield None
        return
    out = tmp_path_factory.mktemp("chain")
    with open(out / "chain.log", "w") as log:  # unbuffered: a killed chain's last words are in it
        proc = subprocess.Popen([sys.executable, "-u", "-m", "tests.pipelines.dagster_chain", str(out)], cwd=REPO,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    yield proc, out, time.monotonic()
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # it stops `dagster dev` on its way out
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def smoke_dataset(tmp_path_factory) -> Path:
    """Root of a synth smoke dataset (params.yaml profile `smoke`): mimic-cxr-jpg/,
    medical-diff-vqa/, ground_truth/, contact_sheet.png. Generated once per test session, in this
    process (workers=1), so the CT stays loaded for later synth tests."""
    from assets.synth.generate import generate
    from assets.synth.plan import SynthConfig
    from assets.params import load_params

    p = load_params(Path(__file__).resolve().parents[1] / "params.yaml", profile="smoke")["synth"]
    cfg = SynthConfig.from_section(p, workers=1)
    root = tmp_path_factory.mktemp("synth-smoke")
    generate(root, cfg)
    return root


@pytest.fixture(scope="session", autouse=True)
def _journal_outside_the_checkout(tmp_path_factory):
    """Pipeline commands note their runs for `spotdiff summary` (pipelines/journal.py); the
    tests' commands (and the subprocesses they start) note them here, not in the checkout."""
    from pipelines.journal import JOURNAL_ENV

    os.environ.setdefault(JOURNAL_ENV, str(tmp_path_factory.mktemp("journal")))


@pytest.fixture(autouse=True)
def _isolate_mlflow_uris():
    """mlflow.set_tracking_uri / set_registry_uri set process globals AND export MLFLOW_*_URI;
    undo both after every test so no test (or the subprocesses it starts) sees another's store."""
    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved = {k: os.environ.get(k) for k in keys}
    yield
    if "mlflow" in sys.modules:  # not imported yet: no global of its can be set
        mlflow = sys.modules["mlflow"]
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
