"""MLflow server unreachable at start: `spotdiff train` says so in one line (exit 2) within
seconds, before the tokenizer is trained, any output is written or Ray is started (MLflow's own
client would retry a refused connection for minutes, after that work).
`python -m pytest tests/reliability/test_tracking_unreachable.py`"""

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import ray
from typer.testing import CliRunner

from models.tracking import TrackingUnreachable, check_reachable
from pipelines.cli import app
from tests.fixtures.tiny_shards import write_tiny_shards

runner = CliRunner()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free again once closed: nothing listens there


def test_train_fails_fast_when_mlflow_is_unreachable(tmp_path, monkeypatch):
    data = write_tiny_shards(tmp_path / "data", n_shards=1)
    out = tmp_path / "out"
    uri = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    start = time.monotonic()
    r = runner.invoke(app, ["train", "--profile", "smoke",
                            "--set", f"data.residuals_root={data.residuals_root}",
                            "--set", f"data.prepared_root={data.pairs_parquet.parent}",
                            "--set", f"train.output_dir={out}", "--set", f"train.storage_path={tmp_path / 'ray'}"])
    elapsed = time.monotonic() - start
    flat = "".join(r.output.split())
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and "".join(f"{uri} is unreachable".split()) in flat
    assert elapsed < 30, f"took {elapsed:.0f}s"
    assert not out.exists() and not (tmp_path / "ray").exists()  # no tokenizer, no checkpoint
    assert not ray.is_initialized()


def test_train_refuses_a_log_folder_it_cannot_write_before_starting(tmp_path):
    data = write_tiny_shards(tmp_path / "data", n_shards=1)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    r = runner.invoke(app, ["train", "--profile", "smoke",
                            "--set", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                            "--set", f"data.residuals_root={data.residuals_root}",
                            "--set", f"data.prepared_root={data.pairs_parquet.parent}",
                            "--set", f"train.log_dir={blocker / 'logs'}",
                            "--set", f"train.output_dir={tmp_path / 'out'}", "--set", f"train.storage_path={tmp_path / 'ray'}"])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and "train.log_dir" in r.output and "cannot write" in r.output
    assert not (tmp_path / "out").exists() and not ray.is_initialized()


class _Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass


def test_check_passes_for_a_listening_server_and_local_stores(tmp_path):
    server = HTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check_reachable(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
    check_reachable(f"sqlite:///{tmp_path}/mlflow.db")  # no server needed
    with pytest.raises(TrackingUnreachable, match="unreachable"):
        check_reachable(f"http://127.0.0.1:{closed_port()}", timeout_s=2)
