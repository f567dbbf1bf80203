"""MLflow tracking against a real sqlite store: python -m pytest tests/models/test_tracking.py -q"""

import json
import subprocess

import mlflow
import pytest
from mlflow import MlflowClient

from models import checkpoint as ckpt
from models import tracking as trk
from models.tokenizer import train_tokenizer
from models.train_loop import build_model

MODEL = dict(backbone="tiny", image_size=32, n_queries=2, proj_layers=1, n_embd=32, n_layer=1,
             n_head=2, vocab_size=300, max_question_len=16, max_answer_len=24,
             use_residual=False, use_rfa=False, residual_kind="naive", rfa_weight=1.0, dropout=0.0)


@pytest.fixture
def uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_run_lifecycle_logs_params_metrics_and_artifacts(uri, tmp_path):
    params = {"train.epochs": 2, "pairs.question_types": ["difference"], "long": "x" * 7000}
    run_id = trk.open_run(uri, "exp", "real-test-1", params, {"git_commit": "abc", "data_version": "d1"})
    assert trk.find_run(uri, "exp", "real-test-1") == run_id
    assert trk.find_run(uri, "exp", "other") is None and trk.find_run(uri, "nope", "x") is None

    tracker = trk.MlflowTracker(uri, run_id, system_metrics=False)
    losses = [3.0, 2.0, 1.5, 1.0]
    for step, loss in enumerate(losses, 1):
        tracker.log_metrics({"train/loss": loss, "train/l_gen": loss * 0.9,
                             "train/l_con": loss * 0.1, "skipped": None}, step)
    tracker.log_metrics({"val_loss": 1.2}, 4)
    tracker.log_records([{"question": "q", "answer": "a", "prediction": "p"}], "val/epoch_001.json")
    tracker.close("RUNNING")

    tok = train_tokenizer(["nothing has changed.", "what has changed?"] * 5, 300)
    cfg = {**MODEL, "vocab_size": len(tok)}
    folder = ckpt.save(tmp_path / "best", build_model(cfg, tok), cfg, tok, ckpt.TrainState(step=4))
    metrics_json = tmp_path / "metrics.json"
    metrics_json.write_text(json.dumps({"test": {"change_f1": 0.5}}))
    preds = [{"question": "q", "answer": "nothing has changed.", "prediction": "nothing has changed."}]
    trk.close_run(uri, run_id, test_metrics={"change_f1": 0.5, "per_template": {"a": 1}},
                  best_checkpoint=folder, predictions=preds, metrics_json=metrics_json, step=4)

    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "real-test-1"
    assert run.data.params["train.epochs"] == "2"
    assert run.data.params["long"] == "x" * 6000  # capped, not rejected
    assert run.data.tags["git_commit"] == "abc"
    assert [m.value for m in sorted(client.get_metric_history(run_id, "train/loss"),
                                    key=lambda m: m.step)] == losses
    assert run.data.metrics["test_change_f1"] == 0.5 and "skipped" not in run.data.metrics
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"checkpoint", "config.json", "loss_curve.png", "metrics.json",
            "test_predictions.json", "val"} <= top
    inner = {a.path for a in client.list_artifacts(run_id, "checkpoint")}
    assert "checkpoint/model.safetensors" in inner and "checkpoint/tokenizer" in inner
    assert mlflow.artifacts.load_dict(f"runs:/{run_id}/config.json")["model"] == cfg
    # no pickled model here: the run's one MLflow model is the pyfunc `spotdiff register` logs
    # into it (models/serving.py; tests/pipelines/test_registry_chain.py)
    mlflow.set_tracking_uri(uri)
    assert mlflow.search_logged_models(filter_string=f"source_run_id = '{run_id}'",
                                       output_format="list") == []


def test_data_version_follows_content(tmp_path):
    a, b = tmp_path / "manifest.json", tmp_path / "pairs.parquet"
    a.write_text("{}"), b.write_bytes(b"1")
    v1 = trk.data_version(a, b)
    assert trk.data_version(a, b) == v1
    b.write_bytes(b"2")
    assert trk.data_version(a, b) != v1


def test_git_commit_names_head_and_dirtiness(tmp_path):
    assert trk.git_commit(tmp_path) == "unknown"  # not a repository
    run = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    (tmp_path / "f").write_text("1")
    run("add", "f")
    run("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True,
                          text=True).stdout.strip()
    assert trk.git_commit(tmp_path) == head
    (tmp_path / "f").write_text("2")
    assert trk.git_commit(tmp_path) == head + "-dirty"
