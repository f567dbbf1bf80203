"""Registry and `ask` mistakes: one line on stderr, exit code 2, no traceback, and nothing done
first — no empty MLflow store created for a missing one, no answer computed before a bad
--heatmap path is found. `python -m pytest tests/reliability/test_bad_registry_cli.py`"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from models.tracking import local_store_path

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def params_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SPOTDIFF_PARAMS", str(REPO / "params.yaml"))
    monkeypatch.delenv("SPOTDIFF_PROFILE", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")


def _app():
    from pipelines.cli import app
    return app


# ---- ask --heatmap ---------------------------------------------------------------------------

@pytest.fixture
def pair(tmp_path):
    for name in ("main.jpg", "ref.jpg"):
        (tmp_path / name).write_bytes(b"not read: the command stops before the model")
    return tmp_path / "main.jpg", tmp_path / "ref.jpg"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case, message", [
    ("directory", "is a directory; give a file name"),
    ("missing_folder", "does not exist"),
])
def test_ask_bad_heatmap_path_is_refused_before_the_model_answers(tmp_path, params_env, pair, monkeypatch,
                                                                   case, message):
    import models.lifecycle.registry as reg

    def must_not_load(*a, **k):
        raise AssertionError("the model was loaded before --heatmap was checked")
    monkeypatch.setattr(reg, "load_answerer", must_not_load)
    heatmap = tmp_path / "out" if case == "directory" else tmp_path / "nope" / "h.png"
    if case == "directory":
        heatmap.mkdir()
    main, ref = pair
    r = runner.invoke(_app(), ["ask", "--main", str(main), "--ref", str(ref), "--heatmap", str(heatmap)])
    out = " ".join(r.output.split())
    assert r.exit_code == 2, r.output
    assert "--heatmap" in out and message in out and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1


# ---- promote -------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_promote_with_no_store_says_so_and_creates_none(tmp_path, params_env):
    r = runner.invoke(_app(), ["promote"])
    out = " ".join(r.output.split())
    assert r.exit_code == 2, r.output
    assert "the MLflow tracking store does not exist" in out and "no candidate" not in out
    assert not (tmp_path / "mlflow.db").exists()


def test_local_store_path_forms(tmp_path):
    assert local_store_path(f"sqlite:///{tmp_path}/m.db") == tmp_path / "m.db"
    assert local_store_path(f"sqlite:///file:{tmp_path}/m.db?mode=ro&uri=true") == tmp_path / "m.db"
    assert local_store_path(f"file://{tmp_path}/mlruns") == tmp_path / "mlruns"
    assert local_store_path("http://127.0.0.1:5000") is None and local_store_path("databricks") is None


@pytest.fixture(scope="module")
def read_only_store(tmp_path_factory) -> str:
    """A real sqlite registry with a candidate to decide on (so promote must write), opened
    read-only through SQLite's own URI flag: read-only even for root, who ignores chmod."""
    from mlflow import MlflowClient

    from models.registry import tag_version
    from assets.params import load_params

    name = load_params(REPO / "params.yaml")["registry"]["model_name"]
    tmp = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{tmp}/mlflow.db"
    c = MlflowClient(uri, uri)
    c.create_registered_model(name)
    v = c.create_model_version(name, source=str(tmp / "model"))
    tag_version(c, name, str(v.version), val_metrics={"change_f1": 0.5, "CIDEr": 1.0},
                data_version="d", git_commit="c")
    return f"sqlite:///file:{tmp}/mlflow.db?mode=ro&uri=true"


@pytest.mark.timeout(120)
def test_promote_on_a_read_only_store_is_one_line(read_only_store, tmp_path):
    """In a subprocess: MLflow logs the database error's traceback through its own handler on
    the real stderr, which an in-process runner would not see."""
    env = {**os.environ, "SPOTDIFF_PARAMS": str(REPO / "params.yaml"), "MLFLOW_TRACKING_URI": read_only_store}
    env.pop("SPOTDIFF_PROFILE", None)
    r = subprocess.run([sys.executable, "-c", "from pipelines.cli import app; app()", "promote"],
                       cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                       timeout=100)
    assert r.returncode == 2, r.stderr
    err = " ".join(r.stderr.split())
    assert "cannot be written" in err and "readonly database" in err and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
