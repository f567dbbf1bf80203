"""A Ray Train worker process SIGKILLed from outside mid-run (no hook in the training code): Ray's
FailureConfig restarts the worker group from the last reported checkpoint and the run finishes
with every optimizer step logged. Real Ray (local, 2 CPU workers) and a real MLflow sqlite store.
`python -m pytest tests/reliability/test_ray_worker_killed.py`"""

import os
import signal
import threading
import time

import psutil
import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from models.train import RunSpec, ScalingSpec, TrackingSpec, fit  # noqa: E402
from models.train_loop import DataSpec, TrainConfig  # noqa: E402
from tests.fixtures.tiny_shards import write_tiny_shards  # noqa: E402

MODEL = dict(backbone="tiny", image_size=32, n_queries=2, proj_layers=1, n_embd=32, n_layer=1,
             n_head=2, vocab_size=300, max_question_len=16, max_answer_len=40,
             use_residual=True, use_rfa=True, residual_kind="naive", rfa_weight=1.0, dropout=0.1)
CFG = TrainConfig(epochs=2, pairs_per_batch=4, lr=3e-3, warmup_steps=2, log_every=1,
                  crop_scale=0.875, val_max_pairs=4, select_metric="val_change_f1", val_num_beams=1)
STEPS_PER_EPOCH = 2  # 16 train pairs over 2 shards -> 8 per rank -> 2 batches of 4 pairs
NAME = "killed"


def _train_workers() -> list[psutil.Process]:
    """Ray Train worker processes of *this* test's Ray instance: descendants of this process
    (the local raylet is our child), so nothing else on the machine is touched."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            continue
    return out


@pytest.mark.slow
def test_killed_worker_resumes_from_checkpoint_and_finishes(tmp_path):
    data = write_tiny_shards(tmp_path / "data", n_shards=2)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        box = {}

        def run():
            try:
                box["result"] = fit(CFG, MODEL, DataSpec(str(data.residuals_root), str(data.pairs_parquet), ""),
                                    ScalingSpec(num_workers=2, resources_per_worker={"CPU": 1}),
                                    RunSpec(NAME, str(tmp_path / "ray"), str(tmp_path / "out"), max_failures=1),
                                    TrackingSpec(uri, "test", system_metrics=False),
                                    params_flat={}, tags={})
            except BaseException as e:  # surfaced below, in the test thread
                box["error"] = e

        thread = threading.Thread(target=run)
        thread.start()
        first_ckpt = tmp_path / "ray" / NAME / "epoch_0001"
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
        thread.join()
    finally:
        ray.shutdown()
    assert "error" not in box, repr(box.get("error"))
    result = box["result"]
    assert not psutil.pid_exists(killed) or psutil.Process(killed).status() == psutil.STATUS_ZOMBIE
    assert len(seen) > 2, "no new worker group was started after the kill"
    assert result.steps == CFG.epochs * STEPS_PER_EPOCH
    client = MlflowClient(uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    steps = {m.step for m in client.get_metric_history(run.info.run_id, "train/l_gen")}
    assert steps == set(range(1, result.steps + 1))  # resumed at the checkpoint: no step missing
    assert (result.best_checkpoint / "model.safetensors").exists()
