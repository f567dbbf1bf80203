"""The Dagster UI path and the loop, for real: `dagster dev` (webserver + daemon) on 127.0.0.1
with a temporary DAGSTER_HOME, on a fresh clone.

1. "Materialize all": the graph (data, model, evaluation, registered model, champion, their
   checks) is launched by clicking the button in a headless Chromium (Playwright) and, in its
   dialog, "All" partitions and "Launch backfill" (partitioned residual_images beside
   unpartitioned assets); the backfill is polled to success through the webserver's GraphQL
   API, and the asset-check results are read back.
2. The loop on the daemon: the two automation sensors are switched on (as in the UI's Automation
   tab), a batch of new subjects lands (`synth.added_subjects`), and with nobody launching
   anything the sensor, the automation conditions and the promotion gate carry it to a new
   registered candidate — in one residual_images run over all groups that recomputes only the
   groups the new subjects fall in. Then,
   with no new file, nothing runs.
A screenshot of the asset graph in the same browser is taken at the end (SPOTDIFF_SCREENSHOT=path.png
keeps it; docs/img/dagster_asset_graph.png is made that way).

`python -m pytest tests/pipelines/test_dagster_ui.py` (source scripts/env.sh first)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from assets.residuals import GROUPS
from tests.pipelines.dagster_dev import browser, click_materialize_all, dagster_dev, fresh_clone, gql, screenshot

CHAIN_ASSETS = {"embedded_dataset", "mimic_images", "diffvqa_questions", "study_pairs", "quarantine", "residual_images",
                "pretrained_encoder", "real_model", "evaluation", "registered_model", "champion_model"}

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
POLL_SECONDS = 5  # automation.poll_seconds in the clone: both sensors tick every 5 s

pytestmark = pytest.mark.slow


def _materializations(url: str, asset: str) -> list[dict]:
    return gql(url, MATERIALIZATIONS, {"path": [asset]})["assetOrError"].get("assetMaterializations", [])


def _start_sensors(url: str) -> None:
    for repo in gql(url, SENSORS)["repositoriesOrError"]["nodes"]:
        for sensor in repo["sensors"]:
            sel = {"repositoryLocationName": repo["location"]["name"], "repositoryName": repo["name"],
                   "sensorName": sensor["name"]}
            started = gql(url, START, {"s": sel})["startSensor"]
            assert started["__typename"] == "Sensor", started


def _wait_for(url: str, asset: str, count: int, log: Path, timeout: float) -> list[dict]:
    """`asset`'s materializations once there are `count` and every run that made them has
    succeeded (a run is done only after its last step); fails at once on a failed or cancelled run
    or backfill (the UI's "Materialize all" and the automation's partitioned requests are backfills)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = {r["runId"]: r["status"] for r in gql(url, ALL_RUNS)["runsOrError"]["results"]}
        failed = {k: v for k, v in runs.items() if v in ("FAILURE", "CANCELED")}
        failed |= {b["id"]: b["status"] for b in gql(url, BACKFILLS)["partitionBackfillsOrError"]["results"]
                   if b["status"] not in ("REQUESTED", "COMPLETED", "COMPLETED_SUCCESS")}
        assert not failed, (failed, log.read_text()[-3000:])
        found = _materializations(url, asset)
        if len(found) >= count and all(runs.get(m["runId"]) == "SUCCESS" for m in found):
            return found
        time.sleep(POLL_SECONDS)
    raise AssertionError(f"{asset}: fewer than {count} materializations by succeeded runs after {timeout:.0f} s\n"
                         + log.read_text()[-3000:])


@pytest.mark.timeout(2400)
def test_materialize_all_then_the_loop_runs_itself_on_the_daemon(tmp_path):
    repo, env = fresh_clone(tmp_path)
    # a fresh clone has no data: "Materialize all" renders it (the asset embedded_dataset)
    assert not (repo / "data").exists()
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["automation"]["poll_seconds"] = POLL_SECONDS  # still off: switched on below, in the UI's way
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    log = tmp_path / "dagster-dev.log"
    with dagster_dev(repo, env, log) as url:
        nodes = gql(url, NODES)["assetNodes"]
        keys = {"/".join(n["assetKey"]["path"]) for n in nodes}
        assert CHAIN_ASSETS <= keys, keys
        deps = {"/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]} for n in nodes}
        # one connected graph: data -> model -> evaluation -> registry
        assert "residual_images" in deps["real_model"] and "evaluation" in deps["registered_model"]
        assert deps["champion_model"] == {"registered_model"}
        assert deps["mimic_images"] == deps["diffvqa_questions"] == {"embedded_dataset"}

        # "Materialize all", clicked in a real browser: the UI launches a backfill of every partition
        with browser(url) as page:
            click_materialize_all(page, url)
        backfills = gql(url, BACKFILLS)["partitionBackfillsOrError"]["results"]
        assert len(backfills) == 1, backfills
        bid = backfills[0]["id"]
        # Done when the last wave's run (it materializes champion_model) has succeeded. The
        # backfill's own status flips only on the backfill daemon's next tick (Dagster's fixed
        # 30 s interval): checked after the loop below, by when it has long flipped.
        t0 = time.time()
        _wait_for(url, "champion_model", 1, log, timeout=1200)
        print(f"materialize all (backfill) took {time.time() - t0:.0f} s")
        runs = gql(url, RUNS, {"id": bid})["runsOrError"]["results"]
        assert runs and all(r["status"] == "SUCCESS" for r in runs), runs  # earlier waves ran before the last
        # the ten residual groups in one run, not ten (single-run backfill policy)
        assert len({m["runId"] for m in _materializations(url, "residual_images")}) == 1

        checks = {}
        for n in gql(url, NODES)["assetNodes"]:
            for c in n["assetChecksOrError"].get("checks", []):
                checks[("/".join(n["assetKey"]["path"]), c["name"])] = c["executionForLatestMaterialization"]
        assert ("champion_model", "promotion_rule") in checks
        failed = {k: v for k, v in checks.items() if v is None or v["status"] != "SUCCEEDED"}
        assert not failed, failed

        # the evaluation pictures are in the registered model's metadata, inline
        meta = gql(url, META)["assetOrError"]["assetMaterializations"][0]["metadataEntries"]
        pictures = {e["label"]: e.get("mdStr", "") for e in meta}
        for label in ("sample_sheet", "change_confusion"):
            assert pictures[label].startswith(f"![{label}.png](data:image/png;base64,"), label

        # 2. the loop: automation on, a batch of new subjects lands, nobody launches anything
        registered = len(_materializations(url, "registered_model"))
        before = set(pl.read_parquet(repo / "data/prepared/pairs.parquet")["subject_id"])
        t_append = time.time() * 1000
        params["synth"]["added_subjects"] = 3
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        subprocess.run([str(Path(sys.executable).parent / "spotdiff"), "synth"], cwd=repo, env=env, check=True,
                       capture_output=True, timeout=600)
        _start_sensors(url)  # the batch is whole on disk before the first poll sees it
        _wait_for(url, "registered_model", registered + 1, log, timeout=1200)
        pairs = pl.read_parquet(repo / "data/prepared/pairs.parquet")
        new_groups = set(pairs.filter(~pl.col("subject_id").is_in(list(before)))["group"])
        assert new_groups, "the batch added no pairs"
        # one run over every group (single-run backfill policy), which recomputed only the new ones
        loop = [m for m in _materializations(url, "residual_images") if float(m["timestamp"]) > t_append]
        assert {m["partition"] for m in loop} == set(GROUPS) and len({m["runId"] for m in loop}) == 1, loop
        meta = {e["label"]: e.get("jsonString") for e in loop[0]["metadataEntries"]}
        assert set(json.loads(meta["recomputed"])) == new_groups, (meta["recomputed"], new_groups)
        assert len(new_groups) < len(set(pairs["group"]))  # not everything was recomputed
        # idle: three polls with no new file start nothing
        n_runs = len(gql(url, ALL_RUNS)["runsOrError"]["results"])
        time.sleep(3 * POLL_SECONDS + 2)
        assert len(gql(url, ALL_RUNS)["runsOrError"]["results"]) == n_runs
        # the "Materialize all" backfill itself ended as a success (its status flipped meanwhile)
        assert gql(url, STATUS, {"id": bid})["partitionBackfillOrError"]["status"] in ("COMPLETED", "COMPLETED_SUCCESS")

        shot = Path(os.environ.get("SPOTDIFF_SCREENSHOT") or tmp_path / "asset-graph.png")
        with browser(url) as page:
            screenshot(page, url + "/assets/champion_model?view=lineage&lineageScope=upstream&lineageDepth=10", shot)
        assert shot.stat().st_size > 10_000
