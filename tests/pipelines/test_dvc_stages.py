"""The ingest, pairs and residuals stages of dvc.yaml run in a temporary git + DVC repo on a tiny
dataset, produce the contract files, and a second `dvc repro` is a no-op.
`python -m pytest tests/pipelines/test_dvc_stages.py` (needs `dvc` on PATH: source scripts/env.sh)."""

import os
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
import yaml

from tests.fixtures.tiny_mimic import write_tiny

REPO = Path(__file__).resolve().parents[2]
STAGES = ("ingest", "pairs", "residuals")


def run(cmd, cwd, env):
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{cmd}: {res.stdout}\n{res.stderr}"
    return res.stdout + res.stderr


@pytest.mark.slow
def test_dvc_repro_twice(tmp_path):
    if not shutil.which("dvc"):
        pytest.fail("dvc is not on PATH: `source scripts/env.sh` first")
    repo = tmp_path / "repo"
    repo.mkdir()
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    stages = {k: dvc["stages"][k] for k in STAGES}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "smoke"
    params["data"].update(mimic_root="raw/mimic-cxr-jpg", diffvqa_root="raw/medical-diff-vqa")
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage in stages.values():
        for dep in stage["deps"]:
            if dep.startswith("assets/"):
                (repo / dep).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(REPO / dep, repo / dep)
    write_tiny(repo / "raw", subjects=4)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "SPOTDIFF_PROFILE": "smoke",
           "PYTHONPATH": str(REPO), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env.pop("SPOTDIFF_PARAMS", None)
    run(["git", "init", "-q"], repo, env)
    run(["dvc", "init", "-q"], repo, env)
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
