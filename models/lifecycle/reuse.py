"""A training run is a function of its inputs: the training data, the params that shape the model
and its test report, the encoder it starts from, and the code. Training is deterministic (same
inputs, same weights: docs/training.md), so when train.output_dir already holds the model of
exactly these inputs, training again would spend the run's time to write the same files.
`train` then keeps that model and its MLflow run instead — whichever entry point made it: a
Dagster materialization followed by `dvc repro` (which has no record of Dagster's work, and
re-runs the stage) trains once, not twice. `train.reuse: false` (or an explicit run name,
which resumes that run) trains regardless.

DVC's own run-cache cannot do this: it knows only runs that DVC made. Dagster's staleness knows
only Dagster's. The key below is written next to the model, so both see it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

# what a finished run leaves in train.output_dir (models/train.py), all needed to reuse it
OUTPUTS = ("best", "tokenizer", "test_predictions.jsonl", "test_report.json", "metrics.json")
KEY_FILE = "trained_with.json"  # written last: a run that died midway leaves no key behind
# train.* keys that say where or how a run is kept, not what it learns
PLUMBING = {"run_name", "log_dir", "storage_path", "output_dir", "max_failures", "num_to_keep", "reuse"}


def code_digest() -> str:
    """sha256 of every Python file of the two packages a training run executes (models/ and
    assets/: the loop, the data stream, the answer grammar): any edit means a new run."""
    import assets
    import models

    h = hashlib.sha256()
    for pkg in (assets, models):
        root = Path(pkg.__file__).parent
        for path in sorted(root.rglob("*.py")):
            h.update(f"{pkg.__name__}/{path.relative_to(root).as_posix()}\0".encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def file_digest(path: str | None) -> str | None:
    if not path:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def inputs_key(params: dict, question_types: tuple[str, ...], data_version: str, targets: bytes | None,
               encoder: str | None) -> dict:
    """Everything the trained weights and the test report depend on, as one JSON-able dict."""
    train = {k: v for k, v in params["train"].items() if k not in PLUMBING}
    evaluate = {k: params.get("evaluate", {}).get(k) for k in ("bootstrap", "seed")}
    model = {k: v for k, v in params["model"].items() if k != "pretrained_resnet"}  # its bytes count, not its path
    return {"model": model, "train": train, "question_types": list(question_types), "evaluate": evaluate,
            "experiment": params["tracking"]["experiment"], "data_version": data_version,
            "finding_targets": hashlib.sha256(targets).hexdigest() if targets is not None else None,
            "encoder": file_digest(encoder), "code": code_digest()}


def _digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def forget(out: Path) -> None:
    """Before a run writes into `out`: the old key must not vouch for half-new files."""
    (out / KEY_FILE).unlink(missing_ok=True)


def remember(out: Path, key: dict, run_name: str) -> None:
    (out / KEY_FILE).write_text(json.dumps({"digest": _digest(key), "run_name": run_name, "inputs": key},
                                           indent=2, sort_keys=True, default=str) + "\n")


def reusable_metrics(out: Path, key: dict, tracking_uri: str) -> dict | None:
    """metrics.json of the model in `out` when it was trained on exactly `key` and its MLflow run
    finished in this tracking store (the registry steps read that run); else None."""
    try:
        kept = json.loads((out / KEY_FILE).read_text())
        if kept.get("digest") != _digest(key) or not all((out / name).exists() for name in OUTPUTS):
            return None
        metrics = json.loads((out / "metrics.json").read_text())
    except (OSError, ValueError, AttributeError):
        return None
    run_id = metrics.get("mlflow_run_id")
    if not run_id:
        return None
    from mlflow.exceptions import MlflowException

    from models.tracking import client_for

    try:
        if client_for(tracking_uri).get_run(run_id).info.status != "FINISHED":
            return None
    except MlflowException:
        return None  # another store, or the run was deleted: train anew
    return metrics
