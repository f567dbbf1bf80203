"""A training run is a function of its inputs: the training data, the params that shape the
weights, the encoder it starts from, the code and the libraries that run it. In its default mode
training is deterministic (same inputs, same weights on CPU: docs/training.md), so when
train.output_dir already holds the model of exactly these inputs, training again would spend the
run's time to write the same files. `train` then keeps that model and its MLflow run instead —
whichever entry point made it: a Dagster materialization followed by `dvc repro` (which has no
record of Dagster's work, and re-runs the stage) trains once, not twice. `train.reuse: false`
(or an explicit run name, which resumes that run) trains regardless.

DVC's own run-cache cannot do this: it knows only runs that DVC made. Dagster's staleness knows
only Dagster's. The key below is written next to the model, so both see it."""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path

from assets.storage import Storage

# what a finished run leaves in train.output_dir (models/train.py), all needed to reuse it
OUTPUTS = ("best", "tokenizer", "test_predictions.jsonl", "test_report.json", "metrics.json")
KEY_FILE = "trained_with.json"  # written last: a run that died midway leaves no key behind
# train.* keys that say where a run is kept or what to call it, not what it learns
# (num_to_keep is not among them: on a tie Ray drops the earlier checkpoint, and best/ may change)
PLUMBING = {"run_name", "log_dir", "storage_path", "output_dir", "max_failures", "reuse"}
# the libraries whose versions change kernels, the tokenizer's training or the data read
LIBRARIES = ("torch", "torchvision", "transformers", "tokenizers", "ray", "numpy", "polars", "pyarrow",
             "safetensors", "regex", "pycocoevalcap")


def code_digest(roots: dict[str, Path] | None = None) -> str:
    """sha256 of every Python file a training run executes: the models package and the assets
    package but its embedded-data renderer (assets/synth reaches training only as data, which
    the data hash covers). Any edit there means a new run. `roots`: {name: folder} (tests)."""
    if roots is None:
        import assets
        import models

        roots = {"models": Path(models.__file__).parent, "assets": Path(assets.__file__).parent}
    h = hashlib.sha256()
    for name, root in sorted(roots.items()):
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if name == "assets" and rel.startswith("synth/"):
                continue
            h.update(f"{name}/{rel}\0".encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def library_versions() -> dict[str, str | None]:
    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {"python": platform.python_version(), **{name: version(name) for name in LIBRARIES}}


def file_digest(path: str | None) -> str | None:
    if not path:
        return None
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def inputs_key(params: dict, question_types: tuple[str, ...], data_version: str, targets: bytes | None,
               encoder: str | None) -> dict:
    """Everything the trained weights depend on, as one JSON-able dict. (The test report's
    bootstrap settings are not in it: the evaluation scores again when they differ.)"""
    train = {k: v for k, v in params["train"].items() if k not in PLUMBING}
    model = {k: v for k, v in params["model"].items() if k != "pretrained_resnet"}  # its bytes count, not its path
    return {"model": model, "train": train, "question_types": list(question_types),
            "experiment": params["tracking"]["experiment"], "data_version": data_version,
            "finding_targets": hashlib.sha256(targets).hexdigest() if targets is not None else None,
            "encoder": file_digest(encoder), "code": code_digest(), "libraries": library_versions()}


def _digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def forget(out: Path) -> None:
    """Before a run writes into `out`: the old key must not vouch for half-new files."""
    (out / KEY_FILE).unlink(missing_ok=True)


def remember(out: Path, key: dict, run_name: str, mlflow_run_id: str | None) -> None:
    """After a run finished: the key, and the run it belongs to (metrics.json must name the same
    run: a `dvc checkout` of older outputs restores this file but not the uncached metrics.json)."""
    # replaced whole (temp file, then rename): a reader beside it sees the old file or the new
    Storage(str(out)).write_bytes((json.dumps(
        {"digest": _digest(key), "run_name": run_name, "mlflow_run_id": mlflow_run_id, "inputs": key},
        indent=2, sort_keys=True, default=str) + "\n").encode(), KEY_FILE)


def kept_model(params: dict, run_name: str | None, out: Path, key: dict, tracking_uri: str) -> dict | None:
    """metrics.json of the model to keep instead of training, or None to train: reuse is on,
    no run is named (a name resumes that run), and the model in `out` is reusable."""
    if not params["train"]["reuse"] or run_name or params["train"]["run_name"]:
        return None
    return reusable_metrics(out, key, tracking_uri)


def reusable_metrics(out: Path, key: dict, tracking_uri: str) -> dict | None:
    """metrics.json of the model in `out` when it was trained on exactly `key`, every output is
    there, metrics.json belongs to the same run, and that MLflow run finished in this tracking
    store and is not deleted (the registry steps read it); else None."""
    try:
        kept = json.loads((out / KEY_FILE).read_text())
        if not isinstance(kept, dict) or kept.get("digest") != _digest(key):
            return None
        if not all((out / name).exists() for name in OUTPUTS):
            return None
        metrics = json.loads((out / "metrics.json").read_text())
        if not (isinstance(metrics, dict) and isinstance(metrics.get("val"), dict)
                and isinstance(metrics.get("test"), dict) and isinstance(metrics.get("steps"), int)):
            return None
    except (OSError, ValueError):
        return None
    run_id = metrics.get("mlflow_run_id")
    if not run_id or (metrics.get("run_name"), run_id) != (kept.get("run_name"), kept.get("mlflow_run_id")):
        return None
    from mlflow.exceptions import MlflowException

    from models.tracking import client_for

    try:
        client = client_for(tracking_uri)
        info = client.get_run(run_id).info
        if info.status != "FINISHED" or info.lifecycle_stage != "active":
            return None
        if client.get_experiment(info.experiment_id).lifecycle_stage != "active":
            return None
    except MlflowException:
        return None  # another store, or the run was deleted for good: train anew
    return metrics
