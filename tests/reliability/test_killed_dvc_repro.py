"""`dvc repro` SIGKILLed (with its stage process) while the residuals stage runs, in a temporary
git + DVC repo: dvc.lock never records the unfinished stage, the re-run repeats only that stage
(ingest and pairs are skipped as unchanged), and afterwards `dvc status` is clean and every shard
in the manifest matches its sha256; the stages wrote the contract files, and one more repro is a
no-op that leaves dvc.lock as it was. `python -m pytest tests/reliability/test_killed_dvc_repro.py`"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from assets.storage import content_hash
from tests.fixtures.dvc_repo import DATA_STAGES as STAGES
from tests.fixtures.dvc_repo import data_stage_repo, run


def _locked_stages(repo: Path) -> set[str]:
    lock = repo / "dvc.lock"
    return set(yaml.safe_load(lock.read_text())["stages"]) if lock.exists() else set()


def _many_small_writes(params: dict) -> None:
    # one pair per shard and per batch: the kill lands between many small writes
    params["profiles"]["smoke"]["residuals"].update(shard_max_mb=0.001, register_iters=[4, 2])
    params["residuals"].update(batch_size=1, workers=1)


@pytest.fixture
def repo(tmp_path):
    return data_stage_repo(tmp_path, subjects=12, edit_params=_many_small_writes)


@pytest.mark.slow
def test_killed_repro_reruns_consistently(repo):
    repo, env = repo
    res = repo / "data/residuals"
    # own session: the kill takes dvc and the `spotdiff residuals` it spawned together
    proc = subprocess.Popen(["dvc", "repro"], cwd=repo, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while not list(res.glob("group=*/shard-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    log = proc.communicate()[0].decode()
    assert proc.returncode == -signal.SIGKILL, f"repro ended before the kill:\n{log}"
    assert _locked_stages(repo) == {"ingest", "pairs"}  # the killed stage is not recorded as done

    second = run(["dvc", "repro"], repo, env)
    assert "Running stage 'residuals'" in second
    assert "Running stage 'ingest'" not in second and "Running stage 'pairs'" not in second, second
    assert _locked_stages(repo) == set(STAGES)
    assert "up to date" in run(["dvc", "status"], repo, env).lower()
    manifest = json.loads((res / "manifest.json").read_text())
    for s in manifest["shards"]:
        assert content_hash((res / s["path"]).read_bytes()) == s["sha256"], s["path"]
    assert {str(p.relative_to(res)) for p in res.rglob("*.parquet") if p.name.startswith("shard-")} == \
        {s["path"] for s in manifest["shards"]}
    assert not list(res.rglob(".tmp-*"))
    # the contract files of the data stages
    pairs = pl.read_parquet(repo / "data/prepared/pairs.parquet")
    assert {"question_id", "pair_id", "main_path", "ref_path", "split"} <= set(pairs.columns)
    assert (repo / "data/prepared/quarantine.parquet").exists()
    # nothing changed: a third repro runs nothing and rewrites no lock entry
    lock = (repo / "dvc.lock").read_text()
    assert "Running stage" not in run(["dvc", "repro"], repo, env)
    assert (repo / "dvc.lock").read_text() == lock
