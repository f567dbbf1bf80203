"""Log the trained ReAl as the MLflow pyfunc (models/pyfunc.py, models-from-code), register it as
a new version of `spotdiff-real` with alias `candidate` and its metric/data/commit tags
(models/registry.py tag_version), and export it to a folder DVC tracks.

One logged model per training run: the pyfunc goes into the training run itself, so the run's
metrics, curves and checkpoint sit next to the model that serves them. Registering the same run
twice returns the existing version (a second `dvc repro`/Dagster materialization changes
nothing)."""

from __future__ import annotations

import base64
import io
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema
from PIL import Image

from models.answer import Preprocess
from models.checkpoint import copy_for_inference
from models.registry import tag_version
from models.tracking import use_store

PYFUNC_FILE = Path(__file__).with_name("pyfunc.py")
ROOT = Path(__file__).resolve().parents[1]
# The packages the pyfunc imports, copied into the model so it loads outside the repo too.
CODE_PATHS = [str(ROOT / "models"), str(ROOT / "assets")]
REQUIREMENTS = ["torch", "torchvision", "transformers", "tokenizers", "safetensors", "pillow",
                "numpy", "pandas", "polars", "pyarrow", "fsspec"]
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "main_image"), ColSpec("string", "ref_image"),
                   ColSpec("string", "question")]),
    outputs=Schema([ColSpec("string", "answer"), ColSpec("string", "changes")]))
QUESTION = "what has changed compared to the reference image?"


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    run_id: str
    model_uri: str
    created: bool   # False: this run was already registered


def example_png(size: int = 64, shift: int = 0) -> str:
    """A synthetic gradient, base64 PNG: the input example must not carry patient images."""
    y, x = np.mgrid[0:size, 0:size]
    img = ((x + y + shift) * 255 // (2 * size)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img, "L").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def input_example() -> pd.DataFrame:
    return pd.DataFrame([{"main_image": example_png(shift=8), "ref_image": example_png(),
                          "question": QUESTION}])


def existing_version(client: MlflowClient, name: str, run_id: str):
    try:
        found = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    except mlflow.exceptions.MlflowException:
        return None
    return max(found, key=lambda v: int(v.version)) if found else None


def log_and_register(uri: str, run_id: str, checkpoint_dir: str | Path, prep: Preprocess,
                     name: str, val_metrics: dict[str, float], test_metrics: dict[str, float],
                     data_version: str, git_commit: str) -> Registered:
    client = use_store(uri)
    found = existing_version(client, name, run_id)
    if found is not None:
        mv, created = found, False
    else:
        with tempfile.TemporaryDirectory() as d, mlflow.start_run(run_id=run_id):
            prep_file = Path(d) / "preprocess.json"
            prep_file.write_text(json.dumps(prep.to_dict(), indent=2, sort_keys=True))
            checkpoint_dir = copy_for_inference(checkpoint_dir, Path(d) / "checkpoint")
            info = mlflow.pyfunc.log_model(
                name="model", python_model=str(PYFUNC_FILE),
                artifacts={"checkpoint": str(checkpoint_dir), "preprocess": str(prep_file)},
                code_paths=CODE_PATHS, signature=SIGNATURE, input_example=input_example(),
                pip_requirements=REQUIREMENTS, registered_model_name=name,
                # paths off by default (served model); `spotdiff ask` loads it with them on
                model_config={"allow_paths": False})
        mv = client.get_model_version(name, str(info.registered_model_version))
        created = True
    version = str(mv.version)
    if created or mv.tags.get("git_commit") is None:
        # tags are written after the version exists: an interrupted register is completed here
        tag_version(client, name, version, val_metrics=val_metrics, test_metrics=test_metrics,
                    data_version=data_version, git_commit=git_commit)
    client.set_model_version_tag(name, version, "mlflow_run_id", run_id)
    return Registered(name, version, run_id, f"models:/{name}/{version}", created)


def export(model_uri: str, dest: str | Path) -> Path:
    """The registered pyfunc as a plain folder (`mlflow models serve -m <folder>` works too)."""
    dest = Path(dest)
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dest))
    return dest
