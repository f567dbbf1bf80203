"""Shared fixtures. Telemetry off for every test process (the same defaults as the CLI)."""

import pipelines.env  # noqa: F401

from pathlib import Path

import pytest


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
    import os

    from pipelines.journal import JOURNAL_ENV

    os.environ.setdefault(JOURNAL_ENV, str(tmp_path_factory.mktemp("journal")))


@pytest.fixture(autouse=True)
def _isolate_mlflow_uris():
    """mlflow.set_tracking_uri / set_registry_uri set process globals AND export MLFLOW_*_URI;
    undo both after every test so no test (or the subprocesses it starts) sees another's store."""
    import os
    import sys

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
