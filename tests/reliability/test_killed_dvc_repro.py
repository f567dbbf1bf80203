"""`dvc repro` SIGKILLed (with its stage process) while the residuals stage runs, in a temporary
git + DVC repo: dvc.lock never records the unfinished stage, the re-run repeats only that stage
(ingest and pairs are skipped as unchanged), and afterwards `dvc status` is clean and every shard
in the manifest matches its sha256. `python -m pytest tests/reliability/test_killed_dvc_repro.py`"""

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from assets.storage import content_hash
from tests.fixtures.tiny_mimic import write_tiny

REPO = Path(__file__).resolve().parents[2]
STAGES = ("ingest", "pairs", "residuals")


def run(cmd, cwd, env):
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{cmd}: {res.stdout}\n{res.stderr}"
    return res.stdout + res.stderr


def _locked_stages(repo: Path) -> set[str]:
    lock = repo / "dvc.lock"
    return set(yaml.safe_load(lock.read_text())["stages"]) if lock.exists() else set()


@pytest.fixture
def repo(tmp_path):
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
    # one pair per shard and per batch: the kill lands between many small writes
    params["profiles"]["smoke"]["residuals"].update(shard_max_mb=0.001, register_iters=[4, 2])
    params["residuals"].update(batch_size=1, workers=1)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for stage in stages.values():
        for dep in stage["deps"]:
            if dep.startswith("assets/"):
                (repo / dep).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(REPO / dep, repo / dep)
    write_tiny(repo / "raw", subjects=12)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "SPOTDIFF_PROFILE": "smoke",
           "PYTHONPATH": str(REPO), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env.pop("SPOTDIFF_PARAMS", None)
    run(["git", "init", "-q"], repo, env)
    run(["dvc", "init", "-q"], repo, env)
    return repo, env


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
