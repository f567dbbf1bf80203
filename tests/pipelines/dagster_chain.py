"""The one end-to-end chain that trains, driven the way a user drives it: a fresh clone under
`dagster dev` (webserver + daemon, 127.0.0.1, its own DAGSTER_HOME), smoke profile.

1. "Materialize all" clicked in a headless Chromium (Playwright), "All" partitions, "Launch
   backfill": from no data at all (the asset embedded_dataset renders it) to a champion.
2. The loop on the daemon: the two automation sensors switched on (as in the UI's Automation
   tab), a batch of new subjects lands (`synth.added_subjects`), and with nobody launching
   anything the sensor, the automation conditions and the promotion gate carry it to a new
   registered version. Then, with no new file, nothing runs.
3. A screenshot of the asset graph, then `dagster dev` stops.
4. `dvc repro` in the same clone: the DVC entry point over the very files Dagster wrote (it
   trains nothing new), with the registry before and after.

What the UI, the daemon and DVC did is recorded here and asserted in test_dagster_ui.py and
test_registry_chain.py (which goes on with the registry and serving tests in the same clone).
Waits are bounded; a failed or cancelled run fails at once.

It runs as its own process (`python -m tests.pipelines.dagster_chain OUT`, started by
tests/conftest.py when the session holds a test of it) beside the other tests: most of its
minutes are spent waiting on the daemon, time the rest of the suite uses. What it saw lands in
OUT/seen.pkl (steps 1-3) and OUT/repro.pkl (step 4)."""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import yaml

from assets.params import load_params
from assets.storage import Storage
from models.tracking import client_for
from tests.pipelines.dagster_dev import (browser, click_materialize_all, dagster_dev, die_with_parent, fresh_clone,
                                         gql, screenshot)

NODES = """{ assetNodes { assetKey { path } dependencyKeys { path }
  assetChecksOrError { ... on AssetChecks { checks { name
    executionForLatestMaterialization { status evaluation { success } } } } } } }"""
BACKFILLS = """{ partitionBackfillsOrError { ... on PartitionBackfills { results { id status } } } }"""
STATUS = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  ... on PartitionBackfill { status } ... on PythonError { message } } }"""
META = """{ assetOrError(assetKey: {path: ["registered_model"]}) { ... on Asset {
  assetMaterializations(limit: 1) { metadataEntries { label ... on MarkdownMetadataEntry { mdStr } } } } } }"""
RUNS = """query($id: String!) { runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
  ... on Runs { results { runId status } } } }"""
ALL_RUNS = """{ runsOrError(limit: 500) { ... on Runs { results { runId status } } } }"""
MATERIALIZATIONS = """query($path: [String!]!) { assetOrError(assetKey: {path: $path}) { ... on Asset {
  assetMaterializations(limit: 200) { partition timestamp runId
    metadataEntries { label ... on JsonMetadataEntry { jsonString } } } } } }"""
SENSORS = """{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name }
  sensors { name } } } } }"""
START = """mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename
  ... on PythonError { message } } }"""
NAME = load_params(profile="smoke")["registry"]["model_name"]  # the smoke profile's own model
POLL_SECONDS = 5  # automation.poll_seconds in the clone: both sensors tick every 5 s
ADDED_SUBJECTS = 3


def materializations(url: str, asset: str) -> list[dict]:
    return gql(url, MATERIALIZATIONS, {"path": [asset]})["assetOrError"].get("assetMaterializations", [])


def _start_sensors(url: str) -> None:
    for repo in gql(url, SENSORS)["repositoriesOrError"]["nodes"]:
        for sensor in repo["sensors"]:
            sel = {"repositoryLocationName": repo["location"]["name"], "repositoryName": repo["name"],
                   "sensorName": sensor["name"]}
            started = gql(url, START, {"s": sel})["startSensor"]
            assert started["__typename"] == "Sensor", started


def _runs(url: str) -> dict[str, str]:
    return {r["runId"]: r["status"] for r in gql(url, ALL_RUNS)["runsOrError"]["results"]}


def _wait_for(url: str, asset: str, count: int, log: Path, timeout: float) -> list[dict]:
    """`asset`'s materializations once there are `count` and every run that made them has
    succeeded (a run is done only after its last step); fails at once on a failed or cancelled run
    or backfill (the UI's "Materialize all" and the automation's partitioned requests are backfills)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = _runs(url)
        failed = {k: v for k, v in runs.items() if v in ("FAILURE", "CANCELED")}
        failed |= {b["id"]: b["status"] for b in gql(url, BACKFILLS)["partitionBackfillsOrError"]["results"]
                   if b["status"] not in ("REQUESTED", "COMPLETED", "COMPLETED_SUCCESS")}
        assert not failed, (failed, log.read_text()[-3000:])
        found = materializations(url, asset)
        if len(found) >= count and all(runs.get(m["runId"]) == "SUCCESS" for m in found):
            return found
        time.sleep(POLL_SECONDS)
    raise AssertionError(f"{asset}: fewer than {count} materializations by succeeded runs after {timeout:.0f} s\n"
                         + log.read_text()[-3000:])


def _checks(url: str) -> dict:
    out = {}
    for n in gql(url, NODES)["assetNodes"]:
        for c in n["assetChecksOrError"].get("checks", []):
            out[("/".join(n["assetKey"]["path"]), c["name"])] = c["executionForLatestMaterialization"]
    return out


def materialize_all_then_the_loop(tmp: Path) -> dict:
    """Runs steps 1-3 and returns what a test needs to judge them (and the clone to go on with)."""
    repo, env = fresh_clone(tmp)
    seen: dict = {"repo": repo, "env": env, "data_before": (repo / "data").exists()}
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["automation"]["poll_seconds"] = POLL_SECONDS  # still off: switched on below, in the UI's way
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = seen["log"] = tmp / "dagster-dev.log"
    with dagster_dev(repo, env, log) as url:
        nodes = gql(url, NODES)["assetNodes"]
        seen["deps"] = {"/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]}
                        for n in nodes}

        # 1. "Materialize all", clicked in a real browser: the UI launches a backfill of every partition
        with browser(url) as page:
            click_materialize_all(page, url)
        seen["backfills"] = gql(url, BACKFILLS)["partitionBackfillsOrError"]["results"]
        bid = seen["backfills"][0]["id"]
        # Done when the last wave's run (it materializes champion_model) has succeeded. The
        # backfill's own status flips only on the backfill daemon's next tick (Dagster's fixed
        # 30 s interval): read after the loop, by when it has long flipped.
        t0 = time.time()
        _wait_for(url, "champion_model", 1, log, timeout=900)
        seen["materialize_all_s"] = time.time() - t0
        seen["backfill_runs"] = gql(url, RUNS, {"id": bid})["runsOrError"]["results"]
        seen["residual_runs"] = {m["runId"] for m in materializations(url, "residual_images")}
        seen["checks"] = _checks(url)
        meta = gql(url, META)["assetOrError"]["assetMaterializations"][0]["metadataEntries"]
        seen["pictures"] = {e["label"]: e.get("mdStr", "") for e in meta}

        # 2. the loop: automation on, a batch of new subjects lands, nobody launches anything
        champions = len(materializations(url, "champion_model"))
        registered = seen["registered_before_loop"] = len(materializations(url, "registered_model"))
        before = set(pl.read_parquet(repo / "data/prepared/pairs.parquet")["subject_id"])
        t_append = time.time() * 1000
        params["synth"]["added_subjects"] = ADDED_SUBJECTS
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        subprocess.run([str(Path(sys.executable).parent / "spotdiff"), "synth"], cwd=repo, env=env, check=True,
                       capture_output=True, timeout=600)
        _start_sensors(url)  # the batch is whole on disk before the first poll sees it
        # champion_model follows registered_model: the loop is over once the gate has decided
        _wait_for(url, "champion_model", champions + 1, log, timeout=900)
        seen["registered_after_loop"] = len(materializations(url, "registered_model"))
        pairs = pl.read_parquet(repo / "data/prepared/pairs.parquet")
        seen["new_groups"] = set(pairs.filter(~pl.col("subject_id").is_in(list(before)))["group"])
        seen["all_groups"] = set(pairs["group"])
        loop = [m for m in materializations(url, "residual_images") if float(m["timestamp"]) > t_append]
        seen["loop_partitions"] = {m["partition"] for m in loop}
        seen["loop_runs"] = {m["runId"] for m in loop}
        meta = {e["label"]: e.get("jsonString") for e in loop[0]["metadataEntries"]} if loop else {}
        seen["recomputed"] = set(json.loads(meta.get("recomputed") or "[]"))
        # idle: three polls with no new file start nothing
        seen["runs_before_idle"] = _runs(url)
        time.sleep(3 * POLL_SECONDS + 2)
        seen["runs_after_idle"] = _runs(url)
        seen["backfill_status"] = gql(url, STATUS, {"id": bid})["partitionBackfillOrError"]["status"]
        seen["loop_checks"] = _checks(url)

        # 3. the asset graph, as the UI draws it
        shot = seen["screenshot"] = Path(os.environ.get("SPOTDIFF_SCREENSHOT") or tmp / "asset-graph.png")
        with browser(url) as page:
            screenshot(page, url + "/assets/champion_model?view=lineage&lineageScope=upstream&lineageDepth=10", shot)
    return seen


def registry(uri: str) -> dict:
    """Versions, champion and the number of MLflow runs of the store at `uri`."""
    c = client_for(uri)
    versions = sorted(int(v.version) for v in c.search_model_versions(f"name='{NAME}'"))
    champion = c.get_registered_model(NAME).aliases.get("champion")
    runs = c.search_runs([e.experiment_id for e in c.search_experiments()], max_results=1000)
    return {"versions": versions, "champion": str(champion) if champion else None, "runs": len(runs)}


def dvc_repro_over_it(repo: Path, env: dict) -> dict:
    """Step 4: `dvc repro` (smoke profile) over the files Dagster wrote, the registry before and after."""
    env = {**env, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    dvc = shutil.which("dvc", path=env.get("PATH"))
    assert dvc, "dvc is not on PATH: `source scripts/env.sh` first"
    # the profile where DVC records it (a stage refuses an environment profile params.yaml does not name)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profile"] = "smoke"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    uri = f"sqlite:///{repo / 'mlflow.db'}"
    before = registry(uri)
    t0, started = time.perf_counter(), time.time()
    out = subprocess.run([dvc, "repro"], cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"dvc repro: {out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    wall = time.perf_counter() - t0
    gate = json.loads((repo / "runs/registry/champion.json").read_text())
    after = registry(uri)
    if after["champion"] is None:  # the manual promotion an operator would do, for the tests that follow
        client_for(uri).set_registered_model_alias(NAME, "champion", gate["candidate"])
    return {"repo": repo, "env": env, "first": out.stdout + out.stderr, "wall": wall, "uri": uri,
            "gate": gate, "started": started, "before": before, "after": after,
            "champion": after["champion"] or gate["candidate"]}


def main(out: Path) -> None:
    # SIGTERM (the test session stopping early, or dying) unwinds like an error: `dagster dev` is stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    die_with_parent()
    results = Storage(str(out))  # each file whole or absent (temp, then rename): the session reads them meanwhile
    seen = materialize_all_then_the_loop(out)
    results.write_bytes(pickle.dumps(seen), "seen.pkl")  # the Dagster tests need no more than this
    results.write_bytes(pickle.dumps(dvc_repro_over_it(seen["repo"], seen["env"])), "repro.pkl")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
