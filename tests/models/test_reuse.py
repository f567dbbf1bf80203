"""Reusing the model of the same inputs (models/lifecycle/reuse.py), against a real sqlite MLflow
store: the key moves with what shapes the model and only with it, and a kept model is reused only
whole, with its key, and with a finished run in this store. (End to end: `dvc repro` after
Dagster's materializations trains nothing new, tests/pipelines/test_registry_chain.py.)"""

import json
from pathlib import Path

import pytest

from assets.params import deep_merge, load_params
from models import tracking as trk
from models.lifecycle.reuse import KEY_FILE, OUTPUTS, forget, inputs_key, remember, reusable_metrics

PARAMS = load_params(profile="smoke")


def key(params=PARAMS, data="d1", targets=b"t", encoder=None):
    return inputs_key(params, ("difference",), data, targets, encoder)


def test_the_key_moves_with_what_shapes_the_model_only():
    base = key()
    assert key() == base  # a pure function of its inputs
    assert key(data="d2") != base and key(targets=b"u") != base
    for section, change in (("train", {"lr": 1e-2}), ("train", {"seed": 1}), ("model", {"n_layer": 3}),
                            ("evaluate", {"bootstrap": 7}), ("tracking", {"experiment": "other"})):
        assert key(deep_merge(PARAMS, {section: change})) != base, (section, change)
    # where and how the run is kept, and the data's own paths, are not what it learns
    for section, change in (("train", {"run_name": "x", "log_dir": "elsewhere", "storage_path": "s3://b/p",
                                       "output_dir": "o", "max_failures": 9, "num_to_keep": 5, "reuse": False}),
                            ("registry", {"margin": 0.3}), ("tracking", {"uri": "http://x"}),
                            ("data", {"prepared_root": "p2"})):
        assert key(deep_merge(PARAMS, {section: change})) == base, (section, change)


def test_the_encoder_counts_by_its_bytes_not_its_path(tmp_path):
    a, b, c = tmp_path / "a.pth", tmp_path / "b.pth", tmp_path / "c.pth"
    a.write_bytes(b"weights")
    b.write_bytes(b"weights")
    c.write_bytes(b"other weights")
    assert key(encoder=str(a)) == key(encoder=str(b)) != key(encoder=str(c))
    assert key(encoder=str(a)) != key()
    moved = deep_merge(PARAMS, {"model": {"pretrained_resnet": str(b)}})
    assert key(moved, encoder=str(b)) == key(encoder=str(a))


def _finished_model(tmp_path: Path, uri: str, status: str = "FINISHED") -> tuple[Path, dict]:
    out = tmp_path / "model"
    (out / "best").mkdir(parents=True)
    (out / "tokenizer").mkdir()
    for name in ("test_predictions.jsonl", "test_report.json"):
        (out / name).write_text("{}\n")
    run_id = trk.open_run(uri, "spotdiff-real", "real-smoke-x", {}, {})
    trk.client_for(uri).set_terminated(run_id, status=status)
    metrics = {"run_name": "real-smoke-x", "mlflow_run_id": run_id, "steps": 4, "best_epoch": 2,
               "val": {"val_change_f1": 0.5}, "test": {"change_f1": 0.4}}
    (out / "metrics.json").write_text(json.dumps(metrics))
    remember(out, key(), "real-smoke-x")
    return out, metrics


def test_a_whole_model_of_the_same_inputs_with_its_finished_run_is_reused(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out, metrics = _finished_model(tmp_path, uri)
    assert set(OUTPUTS) <= {p.name for p in out.iterdir()}
    assert reusable_metrics(out, key(), uri) == metrics
    assert reusable_metrics(out, key(data="d2"), uri) is None  # other data
    assert reusable_metrics(out, key(), f"sqlite:///{tmp_path / 'other.db'}") is None  # another store
    (out / "test_report.json").unlink()
    assert reusable_metrics(out, key(), uri) is None  # not whole
    (out / "test_report.json").write_text("{}\n")
    assert reusable_metrics(out, key(), uri) is not None
    forget(out)  # what a new run does first: a crash midway must not leave files a key vouches for
    assert not (out / KEY_FILE).exists() and reusable_metrics(out, key(), uri) is None


@pytest.mark.parametrize("status", ["FAILED", "RUNNING", "KILLED"])
def test_a_run_that_did_not_finish_is_not_reused(tmp_path, status):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out, _ = _finished_model(tmp_path, uri, status)
    assert reusable_metrics(out, key(), uri) is None


def test_a_damaged_key_file_means_train_anew(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out, _ = _finished_model(tmp_path, uri)
    for text in ("", "not json", "[1, 2]", json.dumps({"digest": "0" * 64})):
        (out / KEY_FILE).write_text(text)
        assert reusable_metrics(out, key(), uri) is None, text
