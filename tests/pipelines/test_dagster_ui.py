"""The Dagster UI path, for real: `dagster dev` (webserver + daemon) on 127.0.0.1 with a temporary
DAGSTER_HOME serves one graph with every asset of the chain (data, model, evaluation, registered
model, champion) and their checks; "Materialize all" is launched through the webserver's GraphQL
API as the UI does (the graph mixes partitioned residual_images with unpartitioned assets, so
the UI launches a backfill of all partitions), polled to success, and the asset-check results
are read back. With SPOTDIFF_SCREENSHOT=path.png (and chromium on PATH) it also saves a headless
Chromium screenshot of the asset graph (docs/img/dagster_asset_graph.png is made that way).

`python -m pytest tests/pipelines/test_dagster_ui.py` (source scripts/env.sh first)."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
CHAIN_ASSETS = {"embedded_dataset", "mimic_images", "diffvqa_questions", "study_pairs", "quarantine", "group_pairs",
                "residual_images",
                "pretrained_encoder", "real_model", "evaluation", "registered_model", "champion_model"}

NODES = """{ assetNodes { assetKey { path } dependencyKeys { path }
  assetChecksOrError { ... on AssetChecks { checks { name
    executionForLatestMaterialization { status evaluation { success } } } } } } }"""
BACKFILL = """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
STATUS = """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
  ... on PartitionBackfill { status } ... on PythonError { message } } }"""
META = """{ assetOrError(assetKey: {path: ["registered_model"]}) { ... on Asset {
  assetMaterializations(limit: 1) { metadataEntries { label ... on MarkdownMetadataEntry { mdStr } } } } } }"""
RUNS = """query($id: String!) { runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
  ... on Runs { results { runId status } } } }"""

pytestmark = pytest.mark.slow


def gql(url: str, query: str, variables: dict | None = None) -> dict:
    r = requests.post(url + "/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
    r.raise_for_status()
    body = r.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_materialize_all_through_the_webserver(tmp_path):
    repo = tmp_path / "spotdiff"
    home = tmp_path / "dagster_home"
    home.mkdir()
    # two runs at a time: the ten residual_images partition runs all at once thrash 2 cores
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nrun_queue:\n  max_concurrent_runs: 2\n")
    env = {**os.environ, "SPOTDIFF_PROFILE": "smoke", "PYTHONPATH": str(repo), "DAGSTER_HOME": str(home)}
    for k in ("SPOTDIFF_PARAMS", "MLFLOW_TRACKING_URI", "SPOTDIFF_MIMIC_ROOT", "SPOTDIFF_DIFFVQA_ROOT"):
        env.pop(k, None)
    # a fresh clone has no data: "Materialize all" renders it (the asset embedded_dataset)
    subprocess.run(["git", "clone", "-q", str(REPO), str(repo)], check=True)
    assert not (repo / "data").exists()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    dagster = Path(sys.executable).parent / "dagster"
    log = open(tmp_path / "dagster-dev.log", "w")
    proc = subprocess.Popen([str(dagster), "dev", "-h", "127.0.0.1", "-p", str(port)], cwd=repo, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            assert proc.poll() is None, (tmp_path / "dagster-dev.log").read_text()[-3000:]
            try:
                if requests.get(url + "/server_info", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(1)
        nodes = gql(url, NODES)["assetNodes"]
        keys = {"/".join(n["assetKey"]["path"]) for n in nodes}
        assert CHAIN_ASSETS <= keys, keys
        deps = {"/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]} for n in nodes}
        # one connected graph: data -> model -> evaluation -> registry
        assert "residual_images" in deps["real_model"] and "evaluation" in deps["registered_model"]
        assert deps["champion_model"] == {"registered_model"}
        assert deps["mimic_images"] == deps["diffvqa_questions"] == {"embedded_dataset"}

        launched = gql(url, BACKFILL, {"p": {"assetSelection": [{"path": k.split("/")} for k in sorted(keys)],
                                              "allPartitions": True}})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        bid = launched["backfillId"]
        t0, deadline = time.time(), time.time() + 1200
        while time.time() < deadline:
            status = gql(url, STATUS, {"id": bid})["partitionBackfillOrError"]["status"]
            if status not in ("REQUESTED",):
                break
            time.sleep(3)
        print(f"materialize all (backfill) took {time.time() - t0:.0f} s")
        runs = gql(url, RUNS, {"id": bid})["runsOrError"]["results"]
        assert status in ("COMPLETED", "COMPLETED_SUCCESS"), (status, runs, (tmp_path / "dagster-dev.log").read_text()[-3000:])
        assert runs and all(r["status"] == "SUCCESS" for r in runs), runs

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

        shot = os.environ.get("SPOTDIFF_SCREENSHOT")
        if shot and shutil.which("chromium"):
            gql(url, "mutation { setNuxSeen }")  # the community pop-up would cover the graph
            profile = tempfile.mkdtemp()
            subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                            "--disable-background-networking", "--disable-component-update",
                            "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                            "--window-size=1800,1000", "--virtual-time-budget=20000",
                            f"--screenshot={shot}",
                            f"{url}/assets/champion_model?view=lineage&lineageScope=upstream&lineageDepth=10"], check=True, timeout=120,
                           capture_output=True)
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()
