"""Reusing the model of the same inputs (models/lifecycle/reuse.py), against a real sqlite MLflow
store: the key moves with what shapes the model and only with it, and a kept model is reused only
whole, with its key, and with a finished run in this store. (End to end: `dvc repro` after
Dagster's materializations trains nothing new, tests/pipelines/test_registry_chain.py.)"""

import json
from pathlib import Path

import pytest
import yaml

from assets.params import deep_merge, load_params
from models import tracking as trk
from models.lifecycle.reuse import (KEY_FILE, OUTPUTS, code_digest, forget, inputs_key, kept_model, remember,
                                    reusable_metrics)

REPO = Path(__file__).resolve().parents[2]

PARAMS = load_params(profile="smoke")


def key(params=PARAMS, data="d1", targets=b"t", encoder=None):
    return inputs_key(params, ("difference",), data, targets, encoder)


def test_the_key_moves_with_what_shapes_the_model_only():
    base = key()
    assert key() == base  # a pure function of its inputs
    assert key(data="d2") != base and key(targets=b"u") != base
    for section, change in (("train", {"lr": 1e-2}), ("train", {"seed": 1}), ("model", {"n_layer": 3}),
                            ("train", {"num_to_keep": 5}),  # on a tie Ray keeps another checkpoint
                            ("tracking", {"experiment": "other"})):
        assert key(deep_merge(PARAMS, {section: change})) != base, (section, change)
    # where the run is kept and what it is called, the data's own paths, and how the test report
    # is bootstrapped (the evaluation scores again) are not what it learns
    for section, change in (("train", {"run_name": "x", "log_dir": "elsewhere", "storage_path": "s3://b/p",
                                       "output_dir": "o", "max_failures": 9, "reuse": False}),
                            ("registry", {"margin": 0.3}), ("tracking", {"uri": "http://x"}),
                            ("evaluate", {"bootstrap": 7}), ("data", {"prepared_root": "p2"})):
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
    remember(out, key(), "real-smoke-x", run_id)
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


def test_metrics_of_another_run_or_a_deleted_run_are_not_reused(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out, metrics = _finished_model(tmp_path, uri)
    # older outputs checked out under a newer, uncached metrics.json: the key names another run
    newer = trk.open_run(uri, "spotdiff-real", "real-smoke-y", {}, {})
    trk.client_for(uri).set_terminated(newer)
    (out / "metrics.json").write_text(json.dumps({**metrics, "run_name": "real-smoke-y", "mlflow_run_id": newer}))
    assert reusable_metrics(out, key(), uri) is None
    (out / "metrics.json").write_text(json.dumps(metrics))
    assert reusable_metrics(out, key(), uri) == metrics
    trk.client_for(uri).delete_run(metrics["mlflow_run_id"])  # in MLflow's trash, not yet gc'd
    assert reusable_metrics(out, key(), uri) is None


def test_reuse_off_or_a_named_run_always_trains(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out, metrics = _finished_model(tmp_path, uri)
    assert kept_model(PARAMS, None, out, key(), uri) == metrics
    assert kept_model(deep_merge(PARAMS, {"train": {"reuse": False}}), None, out, key(), uri) is None
    assert kept_model(PARAMS, "real-smoke-x", out, key(), uri) is None  # a name resumes that run
    assert kept_model(deep_merge(PARAMS, {"train": {"run_name": "r"}}), None, out, key(), uri) is None


def test_the_code_digest_moves_with_any_edit_but_the_synth_renderer(tmp_path):
    models, assets = tmp_path / "models", tmp_path / "assets"
    for folder, name in ((models, "train_loop.py"), (assets / "diffvqa", "grammar.py"), (assets / "synth", "render.py")):
        folder.mkdir(parents=True)
        (folder / name).write_text("x = 1\n")
    roots = {"models": models, "assets": assets}
    base = code_digest(roots)
    (assets / "synth" / "render.py").write_text("x = 2\n")
    assert code_digest(roots) == base  # the renderer reaches training only as data
    for path in (models / "train_loop.py", assets / "diffvqa" / "grammar.py"):
        path.write_text("x = 3\n")
        assert code_digest(roots) != base, path
        path.write_text("x = 1\n")
    (models / "new.py").write_text("")
    assert code_digest(roots) != base


def test_dvc_keeps_every_output_the_decision_reads():
    """The train stage's outputs are the files reuse needs, each persistent (else DVC deletes
    them before the command decides), and its dependencies hold all the code the key digests."""
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"]
    outs = {}
    for entry in stage["outs"] + stage["metrics"]:
        (path, opts), = entry.items()
        outs[path.rsplit("/", 1)[-1]] = opts
    assert set(OUTPUTS) | {KEY_FILE} == set(outs)
    assert all(opts.get("persist") for opts in outs.values()), outs
    assert {"models", "assets"} <= set(stage["deps"])
