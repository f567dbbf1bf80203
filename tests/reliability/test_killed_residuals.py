"""A `spotdiff residuals` run SIGKILLed mid-way (after its first shard appears): no partial
shard is visible (every shard-*.parquet on disk reads back whole; partial bytes exist only under
a hidden .tmp- name), no manifest points at missing data, and a re-run completes with every pair
written once. `python -m pytest tests/reliability/test_killed_residuals.py`"""

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from assets import prepare
from assets.storage import Storage, content_hash
from assets.params import PARAMS_ENV, repo_root
from tests.fixtures.tiny_mimic import ingested_group, write_tiny


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("killed")
    t = write_tiny(tmp / "raw", subjects=12, studies=3)
    prepared = Storage(str(tmp / "prep"))
    prepare.run_ingest_images(Storage(str(t.mimic_root)), prepared)
    prepare.run_ingest_questions(Storage(str(t.diffvqa_root)), prepared, ["difference"])
    prepare.run_pairs(prepared, Storage(str(t.diffvqa_root)))
    # One pair per shard, one pair per batch: many small atomic writes, so the kill lands
    # between shards of a group, the case where a non-atomic writer leaves a torn file.
    params = yaml.safe_load((repo_root() / "params.yaml").read_text())
    for section in (params["residuals"], params["profiles"]["smoke"]["residuals"]):
        section.update(shard_max_mb=0.001, batch_size=1, workers=1, register_iters=[4, 2])
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp


def _cmd(tmp: Path, out: Path) -> list[str]:
    return [shutil.which("spotdiff") or "spotdiff", "residuals", "--prepared", str(tmp / "prep"),
            "--out", str(out), "--profile", "smoke"]


def _env(tmp: Path) -> dict:
    return {**os.environ, PARAMS_ENV: str(tmp / "params.yaml")}


def _visible_shards(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("shard-*.parquet") if not p.name.startswith(".tmp-"))


def _check_manifests(out: Path) -> dict:
    root = json.loads((out / "manifest.json").read_text())
    for s in root["shards"]:
        assert content_hash((out / s["path"]).read_bytes()) == s["sha256"], s["path"]
    return root


@pytest.mark.slow  # kills and re-runs a residual step: kept out of the fast lane
def test_kill_mid_run_then_rerun(setup):
    tmp = setup
    out = tmp / "res"
    proc = subprocess.Popen(_cmd(tmp, out), env=_env(tmp), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not _visible_shards(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    stderr = proc.communicate()[1].decode()
    assert proc.returncode == -signal.SIGKILL, f"run ended before the kill: {stderr[-2000:]}"

    shards = _visible_shards(out)
    assert shards, "the kill came before any shard was written"
    for shard in shards:  # whole files only: a torn parquet fails to read its footer
        assert pq.read_table(shard).num_rows == 1
    assert not (out / "manifest.json").exists()  # the root manifest is written last
    for m in out.glob("group=*/manifest.json"):  # a finished group lists only files that exist
        for s in json.loads(m.read_text())["shards"]:
            assert (out / s["path"]).exists()

    rerun = subprocess.run(_cmd(tmp, out), env=_env(tmp), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    after = _check_manifests(out)
    assert not [p for p in out.rglob(".tmp-*")], "temp files of the killed run were left behind"
    assert {str(p.relative_to(out)) for p in _visible_shards(out)} == {s["path"] for s in after["shards"]}

    pairs = Storage(str(tmp / "prep")).read_parquet("pairs.parquet")
    for group, counts in after["groups"].items():  # every pair of every group accounted for once
        n = pairs.filter(pairs["group"] == group)["pair_id"].n_unique()
        assert counts["rows_in"] == n == counts["rows_out"] + counts["rows_quarantined"]
    assert sum(s["rows"] for s in after["shards"]) == pairs["pair_id"].n_unique()


@pytest.mark.timeout(120)
def test_a_rebuild_that_fails_midway_leaves_the_previous_group_whole(tmp_path, monkeypatch):
    """A changed config rebuilds a group in a staging folder: a failure while writing it leaves
    the previous shards, quarantine and manifest byte for byte, and the next run finishes the
    rebuild and clears the staging folder."""
    import assets.residuals as residuals
    from assets.residuals import ResidualConfig, materialize_group

    _, _, out, pairs, group, _ = ingested_group(tmp_path, subjects=4)
    cfg = ResidualConfig(image_size=32, batch_size=1, register=False)
    materialize_group(pairs, group, out, cfg)
    before = {p: out.read_bytes(p) for p in out.list_files()}

    calls = {"n": 0}
    real = residuals._process_batch

    def fails_on_the_second_batch(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk full")
        return real(*args)

    monkeypatch.setattr(residuals, "_process_batch", fails_on_the_second_batch)
    changed = ResidualConfig(image_size=32, batch_size=1, register=False, low_pct=2.0)
    with pytest.raises(RuntimeError):
        materialize_group(pairs, group, out, changed)
    assert {p: out.read_bytes(p) for p in out.list_files() if ".staging-" not in p} == before
    monkeypatch.setattr(residuals, "_process_batch", real)
    rebuilt = materialize_group(pairs, group, out, changed)
    assert not rebuilt.skipped and not [p for p in out.list_files() if ".staging-" in p]
    assert rebuilt.manifest["config"]["low_pct"] == 2.0
    assert {s["path"] for s in rebuilt.manifest["shards"]} == {p for p in out.list_files() if "shard-" in p}


@pytest.mark.timeout(60)
def test_a_root_manifest_lock_held_by_a_stuck_run_is_a_bounded_wait(tmp_path, monkeypatch):
    """Partitions take an exclusive lock to rewrite the root manifest; one held by a stuck
    process is waited for only LOCK_TIMEOUT_S, then refused in one line naming the lock file."""
    import fcntl

    import assets.residuals as residuals
    from assets.params import UserError

    out = Storage(str(tmp_path / "res"))
    (tmp_path / "res").mkdir()
    monkeypatch.setattr(residuals, "LOCK_TIMEOUT_S", 1)
    with open(tmp_path / "res" / ".manifest.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        started = time.monotonic()
        with pytest.raises(UserError) as e:
            residuals.write_root_manifest(out, 32)
        assert time.monotonic() - started < 10 and ".manifest.lock" in str(e.value)
    assert residuals.write_root_manifest(out, 32)["shards"] == []  # free again: written


@pytest.mark.timeout(300)
def test_a_shard_truncated_on_disk_is_rebuilt_by_the_next_residuals_run(setup):
    """`spotdiff residuals` twice, a shard cut in half between: the second run does not call the
    group up to date (the manifest's size and sha256 no longer match), rewrites it whole, and
    the shard reads back."""
    tmp = setup
    out = tmp / "trunc"
    first = subprocess.run(_cmd(tmp, out), env=_env(tmp), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    shard = _visible_shards(out)[0]
    whole = shard.read_bytes()
    shard.write_bytes(whole[: len(whole) // 2])
    second = subprocess.run(_cmd(tmp, out), env=_env(tmp), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    groups = int(re.search(r"(\d+) groups \(0 up to date\)", first.stderr).group(1))
    assert f"{groups} groups ({groups - 1} up to date)" in second.stderr, second.stderr  # all but the cut one
    assert shard.read_bytes() == whole and pq.read_table(shard).num_rows == 1
