"""Model folders a careless or hostile user hands to `spotdiff ask` / `spotdiff serve`: refused
with one line and exit code 2 before anything in them runs — no pickle is unpickled, no code
file is imported (each payload below would create a marker file if it ran).
`python -m pytest tests/reliability/test_model_folders.py`"""

import os
import pickle
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


class _Payload:
    """Unpickling this calls os.system: what a poisoned python_model.pkl does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("SPOTDIFF_PARAMS", str(REPO / "params.yaml"))
    monkeypatch.delenv("SPOTDIFF_PROFILE", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    for name in ("main.jpg", "ref.jpg"):
        (tmp_path / name).write_bytes(b"not read: the model folder is refused first")
    return tmp_path


def _mlmodel(folder: Path, pyfunc: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    loader = "mlflow.pyfunc.model" if "python_model" in pyfunc else "mlflow.pyfunc.loaders.code_model"
    (folder / "MLmodel").write_text(yaml.safe_dump({"flavors": {"python_function": {
        "loader_module": loader, "cloudpickle_version": "3.1.3", **pyfunc}}}))


def _pickled(folder: Path, marker: Path) -> Path:
    _mlmodel(folder, {"python_model": "python_model.pkl"})
    (folder / "python_model.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    return folder


def _from_code(folder: Path, marker: Path, code: str | None = None) -> Path:
    """A models-from-code folder laid out as spotdiff logs it, its code replaced by a payload."""
    _mlmodel(folder, {"model_code_path": "/somewhere/pyfunc.py",
                      "artifacts": {"checkpoint": {"path": "artifacts/checkpoint"},
                                    "preprocess": {"path": "artifacts/preprocess.json"}}})
    payload = code or f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
    (folder / "pyfunc.py").write_text(payload)
    (folder / "artifacts" / "checkpoint").mkdir(parents=True)
    (folder / "artifacts" / "checkpoint" / "model.safetensors").write_bytes(b"\0" * 8)
    (folder / "artifacts" / "checkpoint" / "config.json").write_text('{"model": {"backbone": "tiny"}, "state": {}}')
    (folder / "artifacts" / "preprocess.json").write_text("{}")
    return folder


def _app():
    from pipelines.cli import app
    return app


def _ask(env: Path, folder: Path):
    return runner.invoke(_app(), ["ask", "--main", str(env / "main.jpg"), "--ref", str(env / "ref.jpg"),
                                  "--model-uri", str(folder)])


def _one_line(r, *words):
    out = " ".join(r.output.split())
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
    for w in words:
        assert w in out, out


@pytest.mark.timeout(60)
def test_a_pickled_model_is_refused_and_its_payload_never_runs(env):
    marker = env / "pwned"
    folder = _pickled(env / "model", marker)
    for cmd in (["ask", "--main", str(env / "main.jpg"), "--ref", str(env / "ref.jpg")], ["serve"]):
        r = runner.invoke(_app(), cmd + ["--model-uri", str(folder)])
        _one_line(r, "pickle", "MLmodel")
    assert not marker.exists()


@pytest.mark.timeout(60)
def test_ask_never_imports_the_folders_code(env):
    """ask builds the model from the folder's weights with this installation's code; the
    folder's own pyfunc.py (here a payload) is not imported."""
    marker = env / "pwned"
    folder = _from_code(env / "model", marker)
    r = _ask(env, folder)
    _one_line(r, "not a checkpoint this spotdiff can load")  # the folder holds no real weights
    assert not marker.exists()


@pytest.mark.timeout(60)
def test_serve_refuses_code_that_is_not_this_installations(env):
    marker = env / "pwned"
    folder = _from_code(env / "model", marker)
    r = runner.invoke(_app(), ["serve", "--model-uri", str(folder)])
    _one_line(r, "pyfunc.py", "differs from this spotdiff's models/pyfunc.py")
    # the project's own pyfunc, but a code/ module someone edited
    _from_code(env / "model2", marker, code=(REPO / "models" / "pyfunc.py").read_text())
    (env / "model2" / "code" / "models").mkdir(parents=True)
    (env / "model2" / "code" / "models" / "answer.py").write_text("import os\nos.system('touch pwned')\n")
    r = runner.invoke(_app(), ["serve", "--model-uri", str(env / "model2")])
    _one_line(r, "answer.py", "differs")
    (env / "model2" / "code" / "models" / "answer.py").unlink()
    (env / "model2" / "code" / "models" / "answer.cpython-311.pyc").write_bytes(b"\0" * 16)
    r = runner.invoke(_app(), ["serve", "--model-uri", str(env / "model2")])
    _one_line(r, "compiled code")
    assert not marker.exists()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case, words", [
    ("torch_pickle", ["pickle-format file (.pt)"]),
    ("pickle_stream", ["a pickle stream"]),
    ("no_mlmodel", ["MLmodel", "missing"]),
    ("huge_mlmodel", ["MLmodel", "exceeds"]),
    ("not_yaml", ["MLmodel", "not YAML"]),
    ("other_flavor", ["flavors", "python_function"]),
    ("symlink", ["symbolic link"]),
    ("no_such_folder", ["no such model folder"]),
    ("artifact_outside", ["outside the model folder"]),
    ("no_config", ["config.json", "missing"]),
    ("huge_config", ["config.json", "exceeds"]),
    ("huge_weights", ["model.safetensors", "exceeds"]),
    ("config_not_json", ["config.json", "not JSON"]),
    ("config_unknown_key", ["config.json", "not a model config this spotdiff knows", "unknown keys ['evil']"]),
    ("preprocess_unknown_key", ["preprocess.json does not fit this spotdiff"]),
    ("preprocess_not_json", ["preprocess.json", "not JSON"]),
])
def test_malformed_model_folders_are_refused_in_one_line(env, case, words):
    folder = _from_code(env / "model", env / "pwned", code=(REPO / "models" / "pyfunc.py").read_text())
    if case == "torch_pickle":
        (folder / "artifacts" / "checkpoint" / "optimizer.pt").write_bytes(pickle.dumps({"a": 1}))
    elif case == "pickle_stream":
        (folder / "artifacts" / "checkpoint" / "config.json").write_bytes(pickle.dumps({"a": 1}))
    elif case == "no_mlmodel":
        (folder / "MLmodel").unlink()
    elif case == "huge_mlmodel":
        (folder / "MLmodel").write_text("#" * (2 * 1024 * 1024))
    elif case == "not_yaml":
        (folder / "MLmodel").write_text("flavors: [unclosed")
    elif case == "other_flavor":
        _mlmodel(folder, {"model_code_path": "pyfunc.py"})
        text = (folder / "MLmodel").read_text().replace("flavors:", "flavors:\n  sklearn: {pickled_model: m.pkl}")
        (folder / "MLmodel").write_text(text)
    elif case == "symlink":
        (folder / "artifacts" / "link.json").symlink_to("/dev/zero")
    elif case == "no_such_folder":
        folder = env / "absent"
    elif case == "no_config":
        (folder / "artifacts" / "checkpoint" / "config.json").unlink()
    elif case == "huge_config":
        (folder / "artifacts" / "checkpoint" / "config.json").write_text(" " * (1024 * 1024 + 1))
    elif case == "huge_weights":  # sparse: nothing allocated, nothing read
        with open(folder / "artifacts" / "checkpoint" / "model.safetensors", "wb") as f:
            f.truncate(5 * 1024**3)
    elif case == "config_not_json":
        (folder / "artifacts" / "checkpoint" / "config.json").write_text("{not json")
    elif case == "config_unknown_key":
        (folder / "artifacts" / "checkpoint" / "config.json").write_text(
            '{"model": {"backbone": "tiny", "evil": 1}, "state": {}}')
    elif case == "preprocess_unknown_key":
        (folder / "artifacts" / "preprocess.json").write_text('{"image_size": 64, "evil": 1}')
    elif case == "preprocess_not_json":
        (folder / "artifacts" / "preprocess.json").write_text("{not json")
    elif case == "artifact_outside":
        _mlmodel(folder, {"model_code_path": "pyfunc.py",
                          "artifacts": {"checkpoint": {"path": "../../"},
                                        "preprocess": {"path": "artifacts/preprocess.json"}}})
    _one_line(_ask(env, folder), *words)


def test_a_column_the_model_does_not_read_is_refused():
    from models.answer import InputError, answer_rows

    class NeverAsked:
        def ask(self, *a):
            raise AssertionError("answered a request with an unknown column")

    with pytest.raises(InputError, match=r"unknown column\(s\) \['questoin'\]"):
        answer_rows(NeverAsked(), [{"main_image": "x", "ref_image": "y", "questoin": "q"}], allow_paths=False)
    with pytest.raises(InputError, match="at most 16"):
        answer_rows(NeverAsked(), [{}] * 17, allow_paths=False)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", ["ask", "serve"])
def test_a_store_model_past_the_size_bound_is_refused_before_it_is_fetched(env, monkeypatch, command):
    """A models:/ or runs:/ URI is fetched through the tracking store: its listing is summed
    first, and a folder past the bound is refused without a byte of it on this disk."""
    import tempfile

    import mlflow

    from models import model_folder

    folder = _from_code(env / "big", env / "marker")
    (folder / "artifacts" / "checkpoint" / "tokenizer").mkdir()
    (folder / "artifacts" / "checkpoint" / "tokenizer" / "tokenizer.json").write_bytes(b"{}" + b" " * 20_000)
    # a client of this store only: an earlier test's active experiment must not leak in
    store = mlflow.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    run = store.create_run(store.create_experiment("oversized", artifact_location=str(env / "artifacts")))
    store.log_artifacts(run.info.run_id, str(folder), "model")
    fetched = env / "fetched"
    fetched.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(fetched))  # where the download would land
    monkeypatch.setattr(model_folder, "MAX_FOLDER_BYTES", 16_000)
    uri = f"runs:/{run.info.run_id}/model"
    args = ["ask", "--main", str(env / "main.jpg"), "--ref", str(env / "ref.jpg")] if command == "ask" else ["serve"]
    r = runner.invoke(_app(), args + ["--model-uri", uri])
    _one_line(r, uri, "more than 16000 bytes", "tokenizer.json")
    assert not [p for p in fetched.rglob("*") if p.is_file()]
    assert not (env / "marker").exists()
    # under the bound the same folder is fetched, and refused by the next check, not this one
    monkeypatch.setattr(model_folder, "MAX_FOLDER_BYTES", 64_000)
    r = runner.invoke(_app(), args + ["--model-uri", uri])
    assert r.exit_code == 2 and "more than" not in r.output, r.output
