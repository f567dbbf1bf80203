"""A training run asking for more CPUs or GPUs than the machine has, or into a train.output_dir
another training is writing: one line, exit 2, before Ray starts (a local Ray Train run would
otherwise wait for the resources forever, or interleave its files with the other run's).
`python -m pytest tests/reliability/test_train_resources.py`"""

import os

import pytest
import ray
import torch
from typer.testing import CliRunner

from pipelines.cli import app
from tests.fixtures.tiny_shards import write_tiny_shards

runner = CliRunner()


def _train(tmp_path, *sets):
    data = write_tiny_shards(tmp_path / "data", n_shards=1)
    return runner.invoke(app, ["train", "--profile", "smoke",
                               "--set", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                               "--set", f"data.residuals_root={data.residuals_root}",
                               "--set", f"data.prepared_root={data.pairs_parquet.parent}",
                               "--set", f"train.output_dir={tmp_path / 'out'}",
                               "--set", f"train.storage_path={tmp_path / 'ray'}", *sets])


def test_more_cpu_workers_than_cores_is_refused_before_ray_starts(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cores = len(os.sched_getaffinity(0))
    r = _train(tmp_path, "--set", f"train.num_workers={cores + 1}")
    assert r.exit_code == 2, r.output
    flat = " ".join(r.output.split())
    assert "Traceback" not in r.output and f"needs {cores + 1} CPUs; this machine has {cores}" in flat
    assert not ray.is_initialized() and not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.device_count() > 0, reason="the machine has a GPU")
def test_use_gpu_without_a_gpu_is_refused_before_ray_starts(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    r = _train(tmp_path, "--set", "train.use_gpu=true", "--set", "train.num_workers=1")
    assert r.exit_code == 2, r.output
    flat = " ".join(r.output.split())
    assert "Traceback" not in r.output and "needs 1 GPUs; this machine has 0" in flat
    assert not ray.is_initialized()


def test_a_second_training_into_the_same_folder_is_refused_before_ray_starts(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    from models.lifecycle.writer_lock import sole_writer

    with sole_writer(tmp_path / "out"):
        r = _train(tmp_path, "--set", "train.num_workers=1")
    assert r.exit_code == 2, r.output
    flat = " ".join(r.output.split())
    assert "Traceback" not in r.output and f"another training (pid {os.getpid()}) is writing there" in flat
    assert not ray.is_initialized()
    assert not (tmp_path / "out" / "best").exists()
