"""What `spotdiff ask` and `spotdiff serve` accept as a model: only what spotdiff itself logged.

A model URI (models:/name@alias, runs:/..., or a plain folder someone hands you) resolves to an
MLflow model folder, and loading such a folder the MLflow way runs code from it: the pyfunc's
source file and everything under code/ go onto sys.path, and a folder saved the old way carries
a cloudpickle that runs on load. So before anything is loaded:

- MLmodel must be a regular file of bounded size, YAML with only the python_function flavor,
  saved from code (MLflow's code_model loader, model_code_path), never as a pickle (python_model);
- no file in the folder may be a pickle (by suffix, or by the pickle protocol's first bytes);
- `ask` then never runs the folder's code: it builds the Answerer from the two artifacts
  (safetensors weights + JSON config + tokenizer JSON, and preprocess.json) with this
  installation's own code;
- `serve` hands the folder to `mlflow models serve`, which does run its code, so every .py in it
  must be byte-identical to this installation's own file of the same name.

Each refusal is one line (ModelFolderError) naming the file and the reason."""

from __future__ import annotations

import hashlib
import json
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MAX_MLMODEL_BYTES = 1024 * 1024
MAX_PREPROCESS_BYTES = 64 * 1024
# per checkpoint file: what the largest model spotdiff trains needs, with room (the paper-sized
# ResNet-50 ×2 + GPT-2 small is ~0.6 GB of fp32 weights)
CHECKPOINT_BOUNDS = {"model.safetensors": 4 * 1024**3, "config.json": 1024 * 1024}
MAX_TOKENIZER_FILE_BYTES = 32 * 1024 * 1024
MAX_FILES = 10_000
# a whole folder fetched from a tracking store: the checkpoint's bounds plus tokenizer and code
MAX_FOLDER_BYTES = sum(CHECKPOINT_BOUNDS.values()) + 256 * 1024 * 1024
# suffixes of formats that unpickle on load (torch.save, joblib, numpy object arrays, dill, ...)
PICKLE_SUFFIXES = {".pkl", ".pickle", ".cloudpickle", ".pt", ".pth", ".ckpt", ".bin", ".joblib",
                   ".dill", ".npy", ".npz"}
# pickle protocols 2..5 start with PROTO (0x80) and the protocol number; a zip (torch.save,
# .npz) with PK
_PICKLE_MAGIC = tuple(bytes([0x80, p]) for p in range(2, 6))


class ModelFolderError(ValueError):
    """A model folder spotdiff refuses to load; the message is the one line the user sees."""


@dataclass(frozen=True)
class ModelArtifacts:
    folder: Path
    checkpoint: Path      # model.safetensors, config.json, tokenizer/
    preprocess: dict      # models.answer.Preprocess fields


def local_folder(model_uri: str, dst: Path | None = None, tracking: str | None = None) -> Path:
    """The model folder behind a URI: a local path as is (the tracking store is not touched),
    anything else downloaded through the tracking store `tracking`."""
    plain = Path(model_uri.removeprefix("file://"))
    if "://" not in model_uri.removeprefix("file://") and ":/" not in model_uri:
        if not plain.is_dir():
            raise ModelFolderError(f"{model_uri}: no such model folder")
        return plain
    import mlflow

    from models.tracking import use_store

    if tracking:
        use_store(tracking)
    dst = dst or Path(tempfile.mkdtemp(prefix="spotdiff-model-"))
    try:
        _check_listing(model_uri)  # sizes from the store's listing, before a byte is fetched
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))
    except mlflow.exceptions.MlflowException as e:
        raise ModelFolderError(f"{model_uri}: cannot load the model ({e.message.splitlines()[0]})") from e


def _check_listing(model_uri: str) -> None:
    """Walk the store's listing of the model's artifacts (at most MAX_FILES entries) and refuse
    a folder whose files add up past MAX_FOLDER_BYTES: a download is bounded before it starts,
    not after the disk fills."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repo = get_artifact_repository(model_uri)  # models:/, runs:/, s3://, file: ... alike
    total, seen, todo = 0, 0, [None]
    while todo:
        for info in repo.list_artifacts(todo.pop()):
            seen += 1
            if seen > MAX_FILES:
                raise ModelFolderError(f"{model_uri}: more than {MAX_FILES} files; not a spotdiff model")
            if info.is_dir:
                todo.append(info.path)
                continue
            total += info.file_size or 0
            if total > MAX_FOLDER_BYTES:
                raise ModelFolderError(f"{model_uri}: more than {MAX_FOLDER_BYTES} bytes of files (at "
                                       f"{info.path}); not a spotdiff model")


def _files(folder: Path) -> list[Path]:
    out = []
    for p in folder.rglob("*"):
        if len(out) >= MAX_FILES:
            raise ModelFolderError(f"{folder}: more than {MAX_FILES} files; not a spotdiff model")
        mode = p.lstat().st_mode
        if stat.S_ISLNK(mode):
            raise ModelFolderError(f"{p}: a symbolic link inside a model folder")
        if stat.S_ISDIR(mode):
            continue
        if not stat.S_ISREG(mode):
            raise ModelFolderError(f"{p}: not a regular file")
        out.append(p)
    return out


def _read_bounded(path: Path, limit: int) -> bytes:
    if not path.is_file():
        raise ModelFolderError(f"{path}: missing; not an MLflow model folder")
    size = path.stat().st_size
    if size > limit:
        raise ModelFolderError(f"{path}: {size} bytes exceeds {limit}")
    with path.open("rb") as f:
        return f.read(limit + 1)[:limit]


def check_folder(folder: Path) -> tuple[dict, list[Path]]:
    """Structure and pickle checks; returns the python_function flavor config and the folder's
    files (walked once, kinds checked)."""
    try:
        mlmodel = yaml.safe_load(_read_bounded(folder / "MLmodel", MAX_MLMODEL_BYTES))
    except yaml.YAMLError as e:
        raise ModelFolderError(f"{folder / 'MLmodel'}: not YAML ({str(e).splitlines()[0]})") from None
    flavors = (mlmodel or {}).get("flavors") if isinstance(mlmodel, dict) else None
    if not isinstance(flavors, dict) or set(flavors) != {"python_function"}:
        raise ModelFolderError(f"{folder / 'MLmodel'}: flavors {sorted(flavors or {})}; spotdiff logs "
                               "only python_function")
    conf = flavors["python_function"] or {}
    # saved from code: MLflow's code-model loader and a source file; a pickled model has
    # python_model (the .pkl path) instead
    if ("python_model" in conf or "model_code_path" not in conf
            or conf.get("loader_module") != "mlflow.pyfunc.loaders.code_model"):
        raise ModelFolderError(f"{folder / 'MLmodel'}: the model is stored as a pickle, not from "
                               "code; spotdiff never unpickles a model")
    files = _files(folder)
    for p in files:
        if p.suffix.lower() in PICKLE_SUFFIXES:
            raise ModelFolderError(f"{p}: a pickle-format file ({p.suffix}) in a model folder")
        with p.open("rb") as f:
            head = f.read(2)
        if p.suffix != ".safetensors" and head in _PICKLE_MAGIC:
            raise ModelFolderError(f"{p}: a pickle stream in a model folder")
    return conf, files


def artifacts(folder: Path) -> ModelArtifacts:
    """The checkpoint and preprocessing of a checked folder (check_folder first)."""
    conf, _ = check_folder(folder)
    arts = conf.get("artifacts") or {}
    try:
        ckpt = (folder / arts["checkpoint"]["path"]).resolve()
        prep_path = (folder / arts["preprocess"]["path"]).resolve()
    except (KeyError, TypeError):
        raise ModelFolderError(f"{folder / 'MLmodel'}: no checkpoint/preprocess artifacts; "
                               "not a spotdiff model") from None
    for p in (ckpt, prep_path):
        if not p.is_relative_to(folder.resolve()):
            raise ModelFolderError(f"{p}: an artifact outside the model folder")
    try:
        prep = json.loads(_read_bounded(prep_path, MAX_PREPROCESS_BYTES))
    except json.JSONDecodeError as e:
        raise ModelFolderError(f"{prep_path}: not JSON ({e.msg})") from None
    for name, bound in CHECKPOINT_BOUNDS.items():
        f = ckpt / name
        if not f.is_file():
            raise ModelFolderError(f"{f}: missing; not a spotdiff checkpoint")
        if f.stat().st_size > bound:
            raise ModelFolderError(f"{f}: {f.stat().st_size} bytes exceeds {bound}")
    config = ckpt / "config.json"
    try:
        from models.config import ModelConfig

        ModelConfig.from_dict(json.loads(_read_bounded(config, CHECKPOINT_BOUNDS["config.json"]))["model"])
    except json.JSONDecodeError as e:
        raise ModelFolderError(f"{config}: not JSON ({e.msg})") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ModelFolderError(f"{config}: not a model config this spotdiff knows ({e})") from None
    for f in (ckpt / "tokenizer").rglob("*") if (ckpt / "tokenizer").is_dir() else []:
        if f.is_file() and f.stat().st_size > MAX_TOKENIZER_FILE_BYTES:
            raise ModelFolderError(f"{f}: {f.stat().st_size} bytes exceeds {MAX_TOKENIZER_FILE_BYTES}")
    return ModelArtifacts(folder, ckpt, prep)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_code(folder: Path, root: Path = ROOT) -> None:
    """Every .py in the folder is this installation's own file: the pyfunc source against
    models/pyfunc.py, code/<pkg>/... against <root>/<pkg>/...."""
    conf, files = check_folder(folder)
    own_pyfunc = root / "models" / "pyfunc.py"
    for p in files:
        if p.suffix in (".pyc", ".pyo", ".so", ".pyd"):
            raise ModelFolderError(f"{p}: compiled code in a model folder")
        if p.suffix != ".py":
            continue
        rel = p.relative_to(folder)
        if rel.parts[0] == "code" and len(rel.parts) > 1:
            mine = root.joinpath(*rel.parts[1:])
        elif rel.name == Path(str(conf["model_code_path"])).name:
            mine = own_pyfunc
        else:
            raise ModelFolderError(f"{p}: code that spotdiff did not log")
        if not mine.is_file() or _sha256(mine) != _sha256(p):
            raise ModelFolderError(f"{p}: differs from this spotdiff's {mine.relative_to(root)}; "
                                   "serve runs the folder's code, so it must be this version's "
                                   "(re-register the model with it)")
