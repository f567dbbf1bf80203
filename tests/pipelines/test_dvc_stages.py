"""The ingest, pairs and residuals stages of dvc.yaml run in a temporary git + DVC repo on a tiny
dataset, produce the contract files, and a second `dvc repro` is a no-op.
`python -m pytest tests/pipelines/test_dvc_stages.py` (needs `dvc` on PATH: source scripts/env.sh)."""

import polars as pl
import pytest

from tests.fixtures.dvc_repo import DATA_STAGES as STAGES
from tests.fixtures.dvc_repo import data_stage_repo, run


@pytest.mark.slow
def test_dvc_repro_twice(tmp_path):
    repo, env = data_stage_repo(tmp_path, subjects=4)
    first = run(["dvc", "repro"], repo, env)
    for s in STAGES:
        assert f"Running stage '{s}'" in first
    pairs = pl.read_parquet(repo / "data/prepared/pairs.parquet")
    assert {"question_id", "pair_id", "main_path", "ref_path", "split"} <= set(pairs.columns)
    assert (repo / "data/prepared/quarantine.parquet").exists()
    assert (repo / "data/residuals/manifest.json").exists()
    lock = (repo / "dvc.lock").read_text()
    second = run(["dvc", "repro"], repo, env)
    assert "Running stage" not in second, second
    assert (repo / "dvc.lock").read_text() == lock
    assert "up to date" in run(["dvc", "status"], repo, env).lower()
