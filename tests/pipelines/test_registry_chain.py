"""The DVC entry point over the one training chain (tests/pipelines/dagster_chain.py): in the clone
that "Materialize all" and the loop took to a champion in Dagster, `dvc repro` (smoke profile)
runs synth → ingest → pairs → residuals → pretrain → train → evaluate → register → promote over
the very files Dagster wrote — byte-identical data, so `train` keeps the model of those inputs
(no new MLflow run, no new version) and the gate re-decides as Dagster's did. A second repro is a
no-op; a param change re-runs only its dependents; `dvc push`/`pull` use the local remote. Then,
on that registry: promotion is idempotent and refuses an unevaluated version, `spotdiff ask`
answers two JPEGs of the embedded data with a heatmap, and the model served by `mlflow models
serve` (via `spotdiff serve`, 127.0.0.1) answers over HTTP like the in-process pyfunc, refuses
bad requests with a 400 and a clear message, and holds a small concurrent load with no error.

`python -m pytest tests/pipelines/test_registry_chain.py` (source scripts/env.sh first; the
chain's process, started with the session by tests/conftest.py, runs the Dagster half and the
first `dvc repro`)."""

import base64
import json
import shutil
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import requests
import yaml

from models.tracking import client_for, use_store
from tests.pipelines.dagster_chain import NAME

CHAIN = ("synth", "ingest", "pairs", "residuals", "pretrain", "train", "evaluate", "register", "promote")
QUESTION = "what has changed compared to the reference image?"

# the chain's first test waits for its process when it has not ended yet (above its bounded waits)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


def run(cmd, cwd, env, ok=True, timeout=900):
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if ok:
        assert res.returncode == 0, f"{cmd}: {res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def chain(dvc_after_dagster):
    """The clone after `dvc repro` over Dagster's files (step 4 of tests/pipelines/dagster_chain.py)."""
    print(f"dvc repro (smoke, after Dagster's materializations): {dvc_after_dagster['wall']:.0f} s")
    return dvc_after_dagster


def client(chain):
    return client_for(chain["uri"])  # its registry is the clone's store, never one set by another test


def test_repro_runs_the_chain_and_ends_with_the_gate_decision(chain):
    for stage in CHAIN:
        assert f"Running stage '{stage}'" in chain["first"], stage
    # the main job's closing table: every stage of this repro ran, and the champion (or none)
    summary = run(["spotdiff", "summary", "--since", str(chain["started"])], chain["repo"], chain["env"]).stdout
    rows = {line.split("│")[1].strip(): line for line in summary.splitlines() if line.count("│") > 4}
    for stage in CHAIN:
        assert "│ ran " in rows[stage], (stage, summary)
    assert "champion:" in summary
    # train kept the model Dagster's loop trained on these very inputs: no new run, no new version
    assert "up to date: " in chain["first"] and "kept real-smoke-" in chain["first"], chain["first"][-3000:]
    before, after = chain["before"], chain["after"]
    assert after == before and len(before["versions"]) == 2, (before, after)
    gate = chain["gate"]
    c = client(chain)
    mv = c.get_model_version_by_alias(NAME, "candidate")
    assert gate["candidate"] == str(mv.version) == str(before["versions"][-1])
    # the gate: validation change-F1 against the question prior of the same split (+ margin),
    # re-applied by DVC's promote to what Dagster's champion_model decided: nothing moves
    f1, floor = float(mv.tags["val.change_f1"]), float(mv.tags["val.prior_change_f1"])
    margin = yaml.safe_load((chain["repo"] / "params.yaml").read_text())["registry"]["floor_margin"]
    assert float(mv.tags["val.prediction_parse_rate"]) == 1.0  # constrained decoding, untrained or not
    assert not gate["promoted"] and gate["champion"] == before["champion"], (gate, before)
    if f1 <= floor + margin:
        assert gate["code"] == "below_floor" and "question prior" in mv.tags["promotion.reason"]
    else:
        assert gate["code"] == ("already_champion" if before["champion"] == gate["candidate"] else "not_better")
    assert mv.tags["promotion.decision"] == ("promoted" if before["champion"] == gate["candidate"] else "kept_champion")
    metrics = json.loads((chain["repo"] / "runs/model/metrics.json").read_text())
    assert float(mv.tags["val.change_f1"]) == pytest.approx(metrics["val"]["val_change_f1"], abs=1e-6)
    evaluated = json.loads((chain["repo"] / "metrics.json").read_text())
    assert float(mv.tags["test.CIDEr"]) == pytest.approx(evaluated["CIDEr"], abs=1e-6)
    run_tags = c.get_run(metrics["mlflow_run_id"]).data.tags
    assert mv.tags["data_version"] == run_tags["data_version"] and len(mv.tags["data_version"]) == 16
    head = run(["git", "rev-parse", "HEAD"], chain["repo"], chain["env"]).stdout.strip()
    assert mv.tags["git_commit"].startswith(head)
    assert mv.run_id == metrics["mlflow_run_id"]
    # one logged model in the run: the pyfunc, with its signature
    import mlflow

    use_store(chain["uri"])  # tracking AND registry: a registry URI left by another test must not win
    exp = c.get_run(mv.run_id).info.experiment_id
    logged = mlflow.search_logged_models(experiment_ids=[exp], filter_string=f"source_run_id = '{mv.run_id}'",
                                         output_format="list")
    assert [m.name for m in logged] == ["model"]
    mlmodel = yaml.safe_load((chain["repo"] / "runs/registry/model/MLmodel").read_text())
    assert "python_function" in mlmodel["flavors"] and "pytorch" not in mlmodel["flavors"]
    assert {c["name"] for c in json.loads(mlmodel["signature"]["inputs"])} == {"main_image", "ref_image", "question"}
    # models-from-code: the model is our source file, no pickled Python object
    assert (chain["repo"] / "runs/registry/model/pyfunc.py").is_file()
    assert not list((chain["repo"] / "runs/registry/model").rglob("*.pkl"))
    # pictures: evaluation sheet + confusion matrix logged to the run, curves as a DVC plot
    arts = {a.path for a in c.list_artifacts(mv.run_id, "evaluation")}
    assert {"evaluation/sample_sheet.png", "evaluation/change_confusion.png", "evaluation/train_curves.csv"} <= arts
    curves = pl.read_csv(chain["repo"] / "runs/registry/train_curves.csv")
    assert curves.height == metrics["steps"] and curves["loss"].null_count() == 0
    # the version explains itself: its model card is the registry description and a file
    card = mv.description
    assert card == (chain["repo"] / "runs/registry/model_card.md").read_text()
    assert card.startswith(f"# {NAME} version {mv.version}") and mv.tags["data_version"] in card and head[:12] in card
    lock = yaml.safe_load((chain["repo"] / "dvc.lock").read_text())
    residuals_md5 = next(o["md5"] for o in lock["stages"]["residuals"]["outs"])
    assert residuals_md5 in card
    ci = evaluated["ci95"]["change_f1"]
    assert f"| change_f1 | {evaluated['change_f1']:.3f} | [{ci[0]:.3f}, {ci[1]:.3f}] |" in card
    assert "## Known limits" in card


def test_second_repro_is_a_no_op(chain):
    out = run(["dvc", "repro"], chain["repo"], chain["env"])
    assert "Running stage" not in out.stdout + out.stderr
    assert len(client(chain).search_model_versions(f"name='{NAME}'")) == len(chain["after"]["versions"])  # untouched


def test_param_change_reruns_only_dependents(chain):
    repo, env = chain["repo"], chain["env"]
    params = repo / "params.yaml"
    original = params.read_text()
    try:
        # the smoke bootstrap count feeds evaluate (and what follows it), never the data or training
        params.write_text(original.replace("      bootstrap: 100", "      bootstrap: 50"))
        assert "      bootstrap: 50" in params.read_text()
        dry = run(["dvc", "repro", "--dry"], repo, env).stdout
        ran = {s for s in CHAIN if f"Running stage '{s}'" in dry}
        assert "evaluate" in ran and not ran & {"synth", "ingest", "pairs", "residuals", "train"}, dry
        # the promotion margin feeds promote only; re-deciding for the champion itself changes nothing
        params.write_text(original.replace("  margin: 0.0\n", "  margin: 0.5\n", 1))
        assert "  margin: 0.5\n" in params.read_text()
        out = run(["dvc", "repro"], repo, env).stdout
        assert {s for s in CHAIN if f"Running stage '{s}'" in out} == {"promote"}
        assert json.loads((repo / "runs/registry/champion.json").read_text())["code"] == "already_champion"
    finally:
        params.write_text(original)
        run(["dvc", "repro", "promote"], repo, env)


def test_push_and_pull_through_the_local_remote(chain):
    repo, env = chain["repo"], chain["env"]
    run(["dvc", "push"], repo, env)
    assert any((repo / "dvc-remote").rglob("*"))
    shutil.rmtree(repo / "data/residuals")
    shutil.rmtree(repo / ".dvc/cache")
    run(["dvc", "pull"], repo, env)
    assert (repo / "data/residuals/manifest.json").exists()
    status = run(["dvc", "status"], repo, env).stdout
    assert "changed" not in status and "deleted" not in status, status


def _pair(repo: Path) -> tuple[Path, Path]:
    pairs = pl.read_parquet(repo / "data/prepared/pairs.parquet").filter(pl.col("split") == "test")
    row = pairs.row(0, named=True)
    return repo / row["main_path"], repo / row["ref_path"]


def _in_process(chain, main: Path, ref: Path) -> dict:
    import mlflow

    use_store(chain["uri"])  # tracking AND registry: a registry URI left by another test must not win
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    out = model.predict(__import__("pandas").DataFrame([{
        "main_image": base64.b64encode(main.read_bytes()).decode(),
        "ref_image": base64.b64encode(ref.read_bytes()).decode(), "question": QUESTION}]))
    return out.iloc[0].to_dict()


def test_ask_answers_two_jpegs_with_a_heatmap(chain):
    from PIL import Image

    main, ref = _pair(chain["repo"])
    assert main.suffix == ".jpg"
    png = chain["repo"] / "ask.png"
    out = run(["spotdiff", "ask", "--main", str(main), "--ref", str(ref), "--heatmap", str(png), QUESTION],
              chain["repo"], chain["env"])
    expected = _in_process(chain, main, ref)
    assert out.stdout.strip().splitlines()[-1] == expected["answer"].strip()
    w, h = Image.open(png).size
    assert w > 2 * h  # pair, residual and relevance map side by side
    bad = run(["spotdiff", "ask", "--main", str(main), "--ref", str(chain["repo"] / "nope.jpg")],
              chain["repo"], chain["env"], ok=False)
    assert bad.returncode == 2 and "nope.jpg: no such file" in " ".join(bad.stderr.split())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(chain):
    port = _free_port()
    env = {**chain["env"], "MLFLOW_TRACKING_URI": chain["uri"]}
    proc = subprocess.Popen(["spotdiff", "serve", "--port", str(port)], cwd=chain["repo"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            try:
                if requests.get(url + "/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(1)
        else:
            pytest.fail("served model did not come up in 180 s")
        yield {"url": url, "port": port, "pid": proc.pid}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _b64(p: Path) -> str:
    return base64.b64encode(p.read_bytes()).decode()


def _post(url: str, rows: list[dict], timeout: float = 120) -> requests.Response:
    return requests.post(url + "/invocations", json={"dataframe_records": rows}, timeout=timeout)


def test_served_model_answers_like_the_in_process_model(chain, served):
    import psutil

    from models.metrics import parse_prediction

    main, ref = _pair(chain["repo"])
    r = _post(served["url"], [{"main_image": _b64(main), "ref_image": _b64(ref), "question": QUESTION}])
    assert r.status_code == 200, r.text[:2000]
    pred = r.json()["predictions"][0]
    assert pred == _in_process(chain, main, ref)
    # the change set is the answer's parse (null when the smoke model's answer is off-grammar)
    parsed = parse_prediction(pred["answer"])
    assert json.loads(pred["changes"]) == (parsed.to_dict() if parsed is not None else None)
    # bound to loopback only: every listening socket of the server process tree is 127.0.0.1
    procs = [psutil.Process(served["pid"])] + psutil.Process(served["pid"]).children(recursive=True)
    listening = [c.laddr for p in procs for c in p.net_connections("tcp") if c.status == psutil.CONN_LISTEN]
    assert listening and {a.ip for a in listening} == {"127.0.0.1"}, listening


def _bomb_png() -> str:
    """A 9000 x 9000 grey PNG (81 Mpx, over the 64 Mpx bound) that compresses to ~80 kB."""
    import io
    import struct
    import zlib

    w = h = 9000
    raw = zlib.compress(b"".join(b"\x00" + bytes(w) for _ in range(h)), 9)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    buf = io.BytesIO()
    buf.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
              + chunk(b"IDAT", raw) + chunk(b"IEND", b""))
    return base64.b64encode(buf.getvalue()).decode()


def test_bad_requests_get_a_clear_400(chain, served):
    main, ref = _pair(chain["repo"])
    good = {"main_image": _b64(main), "ref_image": _b64(ref), "question": QUESTION}
    cases = {
        "missing column": ({"ref_image": good["ref_image"], "question": QUESTION}, "main_image"),
        "empty image": ({**good, "main_image": ""}, "main_image: missing image"),
        "oversized body": ({**good, "ref_image": "A" * (25 * 2**20)}, "exceeds the 16 MB image bound"),
        "not base64": ({**good, "main_image": "not an image!"}, "main_image: not valid base64"),
        "server path": ({**good, "main_image": str(main)}, "file paths are not accepted"),
        "not an image": ({**good, "main_image": base64.b64encode(b"hello").decode()}, "not a decodable image"),
        "too many pixels": ({**good, "ref_image": _bomb_png()}, "exceeds the bound"),
        "empty question": ({**good, "question": ""}, "question: missing"),
    }
    for name, (row, message) in cases.items():
        r = _post(served["url"], [row])
        assert r.status_code == 400, (name, r.status_code, r.text[:500])
        body = r.json()
        assert message in body["message"] + body.get("stack_trace", ""), (name, body["message"][:500])
        assert len(r.content) < 200_000, name  # the error never echoes a huge body back
        assert "stack_trace" not in body and "Traceback" not in r.text, name  # the reason, not server internals
        assert len(body["message"].splitlines()) == 1, name
    # a body past the request bound is refused before it is read whole, declared or chunked
    from models.serving_app import MAX_BODY_BYTES

    big = b'[{"main_image": "' + b"A" * (MAX_BODY_BYTES + 10) + b'"}]'
    r = requests.post(served["url"] + "/invocations", data=big, headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 413 and "exceeds the bound" in r.json()["message"], r.text[:300]
    r = requests.post(served["url"] + "/invocations", data=(big[i:i + 2**20] for i in range(0, len(big), 2**20)),
                      headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 413, r.text[:300]
    # and the server is still answering
    assert _post(served["url"], [good]).status_code == 200


def test_load_concurrent_requests_no_errors(chain, served):
    """Bounded: 32 requests, 4 at a time, localhost; p50/p99 recorded in docs/benchmarks.md."""
    main, ref = _pair(chain["repo"])
    row = {"main_image": _b64(main), "ref_image": _b64(ref), "question": QUESTION}

    def one(_):
        t0 = time.perf_counter()
        r = _post(served["url"], [row], timeout=60)
        return r.status_code, time.perf_counter() - t0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(32)))
    wall = time.perf_counter() - t0
    lat = np.array([t for _, t in results])
    errors = sum(s != 200 for s, _ in results)
    print(f"load: 32 requests, 4 concurrent: p50 {np.percentile(lat, 50) * 1000:.0f} ms, "
          f"p99 {np.percentile(lat, 99) * 1000:.0f} ms, {32 / wall:.1f} req/s, errors {errors}")
    assert errors == 0
    assert wall < 120


def test_promotion_is_idempotent_and_refuses_an_unevaluated_version(chain):
    repo, env = chain["repo"], chain["env"]
    c = client(chain)
    before = {mv.version: dict(mv.tags) for mv in c.search_model_versions(f"name='{NAME}'")}
    again = run(["spotdiff", "register"], repo, env)
    assert json.loads(again.stdout)["created"] is False
    run(["spotdiff", "promote"], repo, env)
    after = {mv.version: dict(mv.tags) for mv in c.search_model_versions(f"name='{NAME}'")}
    assert after == before
    assert str(c.get_model_version_by_alias(NAME, "champion").version) == chain["champion"]
    # a version registered without evaluation (no val.* tags) cannot be promoted
    v1 = c.get_model_version(NAME, chain["champion"])
    # mlflow resolves a models:/m-... source through the process-global tracking URI, not the
    # client's (its own TODO in SqlAlchemyStore.create_model_version); the autouse
    # _isolate_mlflow_uris fixture undoes this after the test
    use_store(chain["uri"])
    bare = c.create_model_version(NAME, v1.source, run_id=v1.run_id)
    c.set_registered_model_alias(NAME, "candidate", bare.version)
    refused = run(["spotdiff", "promote"], repo, env, ok=False)
    # rich wraps the line at the terminal width: compare with whitespace collapsed
    assert refused.returncode == 2 and "evaluate it before promotion" in " ".join(refused.stderr.split())
    assert str(c.get_model_version_by_alias(NAME, "champion").version) == chain["champion"]
    assert c.get_model_version(NAME, bare.version).tags["promotion.decision"] == "refused"
