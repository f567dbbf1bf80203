"""ReAl on real Ray Train (2 CPU workers, gloo) with a real MLflow sqlite store:
python -m pytest tests/models/test_train_ray.py -q

One uninterrupted run is the reference; a second run with the same seed, one of whose worker
processes is SIGKILLed from outside, must resume from the latest checkpoint, log every step and
land on the same metrics (which also checks that the same seed gives the same metrics in
deterministic CPU mode)."""

import json
import os
import signal
import threading
import time

import psutil
import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
pytestmark = pytest.mark.slow  # two real Ray Train runs (~75 s): kept out of the fast lane

import ray  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from models.train import RunSpec, ScalingSpec, TrackingSpec, fit  # noqa: E402
from models.train_loop import DataSpec, TrainConfig  # noqa: E402
from tests.fixtures.tiny_shards import write_tiny_shards  # noqa: E402

MODEL = dict(backbone="tiny", image_size=32, n_queries=2, proj_layers=1, n_embd=32, n_layer=1,
             n_head=2, vocab_size=300, max_question_len=16, max_answer_len=40,
             use_residual=True, use_rfa=True, residual_kind="naive", rfa_weight=1.0, dropout=0.1)
CFG = TrainConfig(epochs=3, pairs_per_batch=4, lr=3e-3, warmup_steps=2, log_every=1,
                  crop_scale=0.875, val_max_pairs=None, select_metric="val_change_f1")
STEPS_PER_EPOCH = 2  # 16 train pairs over 2 shards -> 8 per rank -> 2 batches of 4 pairs


@pytest.fixture(scope="module")
def ray_local():
    # log_to_driver: workers' lines come back to this process, as in `spotdiff train`
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=True)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_shards(tmp_path_factory.mktemp("data"), n_shards=2)


def _fit(tmp, tiny, name, cfg=CFG, max_failures=0):
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    log = tmp / "logs" / f"{name}.log"
    result = fit(cfg, MODEL, DataSpec(str(tiny.residuals_root), str(tiny.pairs_parquet), ""),
                 ScalingSpec(num_workers=2, resources_per_worker={"CPU": 1}),
                 RunSpec(name, str(tmp / "ray"), str(tmp / name), max_failures=max_failures,
                         log_file=str(log)),
                 TrackingSpec(uri, "test", system_metrics=True, system_metrics_interval_s=1.0),
                 params_flat={"train.epochs": cfg.epochs}, tags={"git_commit": "abc"})
    return result, MlflowClient(uri)


@pytest.fixture(scope="module")
def reference(ray_local, tiny, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    return (tmp, *_fit(tmp, tiny, "reference"))


def test_two_worker_fit_writes_checkpoint_and_mlflow_run(reference):
    tmp, result, client = reference
    assert result.steps == CFG.epochs * STEPS_PER_EPOCH
    assert (result.best_checkpoint / "model.safetensors").exists()
    assert (result.best_checkpoint / "tokenizer" / "tokenizer.json").exists()
    # Ray stored one checkpoint per epoch under storage_path/<name>, keeping num_to_keep
    stored = sorted(p.name for p in (tmp / "ray" / "reference").glob("epoch_*"))
    assert 1 <= len(stored) <= 2 and stored[-1] == f"epoch_{CFG.epochs:04d}"
    # Ray's output went to the run's log, the workers' progress lines with it
    log = (tmp / "logs" / "reference.log").read_text()
    assert f"[epoch {CFG.epochs}/{CFG.epochs}]" in log and "validation" in log
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    assert metrics["val"] and {"change_f1", "BLEU-4", "CIDEr"} <= set(metrics["test"])
    assert "per_template" in json.loads((result.output_dir / "test_report.json").read_text())
    assert metrics["best_epoch"] == result.val_metrics["epoch"]
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == str(CFG.epochs)
    assert run.data.tags["git_commit"] == "abc"
    for key in ("train/l_gen", "train/l_con", "train/lr", "train/samples_per_s", "val_loss",
                "val_change_f1", "test_change_f1"):
        assert key in run.data.metrics, key
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "train/l_gen"))
    assert steps == list(range(1, result.steps + 1))
    assert any(k.startswith("system/") for k in run.data.metrics)  # mlflow system metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"checkpoint", "config.json", "loss_curve.png", "metrics.json",
            "test_predictions.json"} <= artifacts


def _train_workers() -> list[psutil.Process]:
    """Ray Train worker processes of *this* test's Ray instance: below the raylet that ray.init
    started as a child of this process, so nothing else is touched (not even the Ray workers of
    the training chain, another child of the test session, tests/conftest.py)."""
    out = []
    for child in psutil.Process().children():
        try:  # any process may end between the listing and the look (gone: not ours to kill)
            if child.name() != "raylet":
                continue
            for p in child.children(recursive=True):
                try:
                    if "RayTrainWorker" in " ".join(p.cmdline()):
                        out.append(p)
                except psutil.Error:
                    continue
        except psutil.Error:
            continue
    return out


@pytest.mark.timeout(1500)  # above its own waits: 300 s to the checkpoint, 300 s more to the end, the join
def test_killed_worker_resumes_from_checkpoint_with_same_metrics(reference, tiny, tmp_path):
    """A worker process SIGKILLed from outside once the first epoch's checkpoint is on disk (no
    hook in the training code): FailureConfig starts a new worker group from the last reported
    checkpoint, every optimizer step is logged, and, seeded per epoch, the run replays the
    uninterrupted one exactly."""
    _, ref, _ = reference
    box = {}

    def run():
        try:
            box["result"] = _fit(tmp_path, tiny, "killed", max_failures=1)
        except BaseException as e:  # surfaced below, in the test thread
            box["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    try:
        first_ckpt = tmp_path / "ray" / "killed" / "epoch_0001"
        deadline = time.monotonic() + 300
        while not first_ckpt.exists() and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        victims = _train_workers()
        assert first_ckpt.exists() and victims, "no checkpoint / worker to kill"
        killed = victims[0].pid
        os.kill(killed, signal.SIGKILL)
        seen = {p.pid for p in victims}
        while thread.is_alive():  # the restarted group runs in new processes
            seen |= {p.pid for p in _train_workers()}
            time.sleep(0.05)
            assert time.monotonic() < deadline + 300, "the resumed run did not finish"
    finally:
        # a run left going would redirect this process's output under the next tests
        thread.join(timeout=600)
    assert "error" not in box, repr(box.get("error"))
    result, client = box["result"]
    assert not psutil.pid_exists(killed) or psutil.Process(killed).status() == psutil.STATUS_ZOMBIE
    assert len(seen) > 2, "no new worker group was started after the kill"
    assert result.steps == ref.steps
    assert client.get_run(result.mlflow_run_id).info.status == "FINISHED"
    hist = client.get_metric_history(result.mlflow_run_id, "train/l_gen")
    assert sorted({m.step for m in hist}) == list(range(1, ref.steps + 1))  # none skipped
    for key in ("val_loss", "val_l_gen", "val_change_f1"):
        assert result.val_metrics[key] == pytest.approx(ref.val_metrics[key], rel=1e-6), key
    assert result.test_metrics == pytest.approx(ref.test_metrics, rel=1e-6)
