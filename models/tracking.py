"""MLflow for a training run. The driver opens the run (so its id and unique name exist before
any worker starts, and a restarted worker re-attaches to the same run), rank 0 logs the step
and epoch metrics plus system metrics, and the driver closes it with the test scores and the
artifacts: config, tokenizer, checkpoint, loss-curve PNG, a table of sample predictions.

Kept out of models/train_loop.py, which only sees the `Tracker` protocol."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import subprocess
import tempfile
from pathlib import Path

import mlflow
from mlflow import MlflowClient

TRAIN_CURVES = ("train/loss", "train/l_gen", "train/l_con")


def git_commit(cwd: str | Path = ".") -> str:
    """HEAD, with '-dirty' when tracked files differ: a run must say which code made it."""
    try:
        # bounded: git on a network filesystem or behind a lock can stall; the commit is a tag
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                              text=True, check=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def use_store(uri: str) -> MlflowClient:
    """Point this process at one MLflow store for tracking AND the registry, and return a client
    bound to it. Both halves matter: mlflow keeps the tracking and the registry URI as separate
    process globals (and exports MLFLOW_*_URI), and some of its calls (a models:/m-... source in
    create_model_version, mlflow.start_run) read the globals, not the client. Setting only the
    tracking URI lets a registry URI left by an earlier caller in the same process win."""
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return client_for(uri)


def client_for(uri: str) -> MlflowClient:
    """A client whose registry is the tracking store, whatever the process globals say."""
    return MlflowClient(uri, registry_uri=uri)


def local_store_path(uri: str) -> Path | None:
    """The file or folder of a local store (sqlite:///path, sqlite:///file:path?mode=ro&uri=true,
    file:///path); None for a server or a scheme this project does not use."""
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        if path.startswith("file:"):  # SQLite's URI form: file:PATH?options
            path = path[len("file:"):].split("?", 1)[0]
        return Path(path) if path and path != ":memory:" else None
    if uri.startswith("file://"):
        return Path(uri[len("file://"):])
    return None


class TrackingStoreMissing(FileNotFoundError):
    """A command that only reads or updates the registry found no store: MLflow would silently
    create an empty one there, and the command would answer as if the registry were empty."""


def require_store(uri: str) -> None:
    path = local_store_path(uri)
    if path is not None and not path.exists():
        raise TrackingStoreMissing(f"{path}: the MLflow tracking store does not exist ({uri}); run "
                                   "`spotdiff train` and `spotdiff register` first, or set MLFLOW_TRACKING_URI")


def is_read_only_error(e: BaseException) -> bool:
    """A store this process may not write: a read-only file or folder, or a read-only mount."""
    text = str(e)
    return any(s in text for s in ("readonly database", "read-only file system", "unable to open database file"))


@contextlib.contextmanager
def quiet_store_errors():
    """MLflow's sqlite store logs every database error with its full traceback (hundreds of
    lines) before raising; the caller that turns the error into one line silences that log."""
    logger = logging.getLogger("mlflow.store.db.utils")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class TrackingUnreachable(ConnectionError):
    """The MLflow server does not answer: said before any compute, not after a training run."""


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Pre-flight for an http(s) tracking URI: GET /health once. MLflow's own client retries a
    refused connection with backoff for minutes, and the first call comes after the tokenizer
    is trained; a store that is a file or sqlite path needs no server."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return  # the server answered (an auth proxy may refuse /health): reachable
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise TrackingUnreachable(f"MLflow tracking server {uri} is unreachable ({reason}); start it "
                                  "(`mlflow server` / the local stack) or set MLFLOW_TRACKING_URI") from e


def data_version(*files: str | Path | bytes) -> str:
    """sha256 over the residual manifest (which holds every shard's sha256) and pairs.parquet:
    changes exactly when the training data does. Each item is a local path or the file's bytes
    (the entry point reads s3:// files through the storage layer; this module stays env-free)."""
    h = hashlib.sha256()
    for f in files:
        h.update(f if isinstance(f, bytes) else Path(f).read_bytes())
    return h.hexdigest()[:16]


def open_run(uri: str, experiment: str, run_name: str, params: dict, tags: dict) -> str:
    """Create the run on the driver; returns its id. Params are the flattened params.yaml."""
    client = use_store(uri)
    exp = mlflow.set_experiment(experiment)
    run = client.create_run(exp.experiment_id, run_name=run_name, tags=tags)
    # MLflow caps a param value at 6000 characters; a long list is still one readable string.
    items = [mlflow.entities.Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[i:i + 100])
    return run.info.run_id


def find_run(uri: str, experiment: str, run_name: str) -> str | None:
    """The run a re-launched `spotdiff train --run-name X` should continue, if any."""
    client = client_for(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], f"attributes.run_name = '{run_name}'",
                              max_results=1)
    return runs[0].info.run_id if runs else None


class MlflowTracker:
    """The rank-0 tracker inside a Ray worker (or the plain loop). Attaches to the driver's run."""

    def __init__(self, uri: str, run_id: str, system_metrics: bool = True,
                 system_metrics_interval_s: float = 10.0):
        use_store(uri)
        mlflow.set_system_metrics_sampling_interval(system_metrics_interval_s)
        mlflow.set_system_metrics_samples_before_logging(1)
        self.run = mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        mlflow.log_metrics(clean, step=step, synchronous=True)

    def log_records(self, records: list[dict], name: str) -> None:
        if records:
            mlflow.log_table({k: [r[k] for r in records] for k in records[0]}, artifact_file=name)

    def close(self, status: str = "FINISHED") -> None:
        mlflow.end_run(status=status)


def fail_run(uri: str, run_id: str) -> None:
    client_for(uri).set_terminated(run_id, status="FAILED")


def plot_loss_curve(client: MlflowClient, run_id: str, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key in TRAIN_CURVES + ("val_loss",):
        hist = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
        # a resumed run re-logs the steps of the failed epoch: keep the last value per step
        by_step = {m.step: m.value for m in hist}
        if by_step:
            ax.plot(list(by_step), list(by_step.values()), label=key,
                    marker="o" if key == "val_loss" else None)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title(f"run {run_id[:8]}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def close_run(uri: str, run_id: str, *, test_metrics: dict[str, float], best_checkpoint: Path,
              predictions: list[dict], metrics_json: Path | None, step: int,
              status: str = "FINISHED") -> None:
    """Driver side, after fit: test scores (scored once) and artifacts. The run's one MLflow model
    is the pyfunc `spotdiff register` logs into it (models/serving.py, models-from-code,
    safetensors weights): no pickled copy here."""
    client = use_store(uri)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({f"test_{k}": float(v) for k, v in test_metrics.items()
                            if isinstance(v, (int, float))}, step=step)
        mlflow.log_artifacts(str(best_checkpoint), artifact_path="checkpoint")
        mlflow.log_dict(json.loads((best_checkpoint / "config.json").read_text()),
                        "config.json")
        if metrics_json is not None:
            mlflow.log_artifact(str(metrics_json))
        if predictions:
            mlflow.log_table({k: [r[k] for r in predictions] for k in predictions[0]},
                             artifact_file="test_predictions.json")
        with tempfile.TemporaryDirectory() as d:
            mlflow.log_artifact(str(plot_loss_curve(client, run_id, Path(d) / "loss_curve.png")))
    client.set_terminated(run_id, status=status)


def tagged_runs(uri: str, experiment: str, tag: str, value: str) -> list[dict]:
    """Finished runs with tags.<tag> = value, as plain dicts (for reports such as the ablations)."""
    client = client_for(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], f"tags.{tag} = '{value}' and "
                              "attributes.status = 'FINISHED'", max_results=1000)
    return [{"run_id": r.info.run_id, "run_name": r.info.run_name, "tags": dict(r.data.tags),
             "metrics": dict(r.data.metrics)} for r in runs]
