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
    from pipelines.params import load_params

    p = load_params(Path(__file__).resolve().parents[1] / "params.yaml", profile="smoke")["synth"]
    cfg = SynthConfig.from_section(p, workers=1)
    root = tmp_path_factory.mktemp("synth-smoke")
    generate(root, cfg)
    return root
