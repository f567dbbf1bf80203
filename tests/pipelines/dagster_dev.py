"""`dagster dev` (webserver + daemon) for the tests that drive the real UI process: a fresh clone
of this repository in a temporary folder, its own DAGSTER_HOME, the webserver's GraphQL API, and
a headless Chromium screenshot of a page."""

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from pipelines.journal import JOURNAL_ENV

REPO = Path(__file__).resolve().parents[2]


def gql(url: str, query: str, variables: dict | None = None) -> dict:
    r = requests.post(url + "/graphql", json={"query": query, "variables": variables or {}}, timeout=60)
    r.raise_for_status()
    body = r.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def die_with_parent() -> None:
    """This process gets SIGTERM when its parent dies, however it dies (Linux PR_SET_PDEATHSIG):
    a test session killed outright (CI cancelled, SIGKILL, out of memory) leaves no chain or
    `dagster dev` of its own running."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_clone(tmp: Path) -> tuple[Path, dict]:
    """A clone of the committed tree and the environment to run it in (smoke profile; no
    variable of the developer's shell that would point it elsewhere)."""
    repo, home = tmp / "spotdiff", tmp / "dagster_home"
    home.mkdir()
    # two runs at a time: on 2 cores more runs at once only thrash (each run starts a Python with torch)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\nrun_queue:\n  max_concurrent_runs: 2\n")
    env = {**os.environ, "SPOTDIFF_PROFILE": "smoke", "PYTHONPATH": str(repo), "DAGSTER_HOME": str(home)}
    # mlflow.set_tracking_uri / set_registry_uri in earlier tests of this process export
    # MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI: the clone must use its own store only. Its run
    # journal too (the clone's runs/journal): the tests' shared one gets the notes of the tests that
    # run beside the chain, and `spotdiff summary` in the clone must see its own runs only.
    for k in ("SPOTDIFF_PARAMS", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "SPOTDIFF_MIMIC_ROOT",
              "SPOTDIFF_DIFFVQA_ROOT", JOURNAL_ENV):
        env.pop(k, None)
    subprocess.run(["git", "clone", "-q", str(REPO), str(repo)], check=True)
    return repo, env


@contextlib.contextmanager
def dagster_dev(repo: Path, env: dict, log_path: Path, start_timeout: float = 180):
    """Yields the webserver's URL once it answers; stops the whole process group after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    dagster = Path(sys.executable).parent / "dagster"
    log = open(log_path, "w")
    proc = subprocess.Popen([str(dagster), "dev", "-h", "127.0.0.1", "-p", str(port)], cwd=repo, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=die_with_parent)
    try:
        deadline = time.time() + start_timeout
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.time() < deadline, f"dagster dev did not answer in {start_timeout} s"
            try:
                if requests.get(url + "/server_info", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()


@contextlib.contextmanager
def browser(url: str):
    """A headless Chromium page on the webserver, driven by Playwright (the system Chromium that
    scripts/setup.sh installs: nothing is downloaded). The community pop-up a first visit shows
    is marked seen for this instance first, through the UI's own mutation, so it never opens."""
    from playwright.sync_api import sync_playwright

    # The pop-up opens at any time after the first load, over whatever is open: seen over the
    # Materialize dialog, where its Skip button could not take a click (the dialog's overlay held
    # it). The UI records a dismissal with this mutation (a file under DAGSTER_HOME); the test's
    # instance gets it before the first page, as if a user had skipped it once.
    gql(url, "mutation { setNuxSeen }")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed (scripts/setup.sh installs it)"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = b.new_page(viewport={"width": 1800, "height": 1000})
            page.set_default_timeout(120_000)  # the UI renders client-side, on 2 busy cores
            page.goto(url + "/asset-groups", wait_until="networkidle")
            yield page
        finally:
            b.close()


def click_materialize_all(page, url: str) -> None:
    """The global lineage page's "Materialize all": its dialog (partitioned residual_images beside
    unpartitioned assets) with every partition selected, then "Launch backfill"."""
    page.goto(url + "/asset-groups", wait_until="networkidle")
    page.get_by_role("button", name="Materialize all").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name="All", exact=True).click()
    dialog.get_by_role("button", name="Launch backfill").click()
    dialog.wait_for(state="detached")


def screenshot(page, url: str, out: Path) -> Path:
    """A picture of the page at `url` once it has settled."""
    page.goto(url, wait_until="networkidle")
    page.wait_for_timeout(3000)  # the graph lays itself out after the data arrives
    page.screenshot(path=str(out))
    return out
