"""`spotdiff register`, `spotdiff promote`, `spotdiff ask`, `spotdiff serve`: the model registry
and answering questions. Thin adapters over models/serving.py, models/registry.py and
models/answer.py; `register_from_params` / `promote_from_params` also back the Dagster assets
registered_model / champion_model and the DVC stages register / promote."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import typer

from pipelines.commands.common import UserError, params_for, user_errors
from pipelines.commands.train import tracking_uri
from pipelines.params import resolve_path

ProfileOpt = typer.Option(None, help="params.yaml profile (default: params' `profile`)")


def preprocess_from_params(params: dict):
    """What the residual assets did to the training images, for the served model to repeat."""
    from models.answer import Preprocess
    from pipelines.resources import residual_config

    rc = residual_config(params)
    m = params["model"]
    return Preprocess(image_size=rc.image_size, low_pct=rc.low_pct, high_pct=rc.high_pct,
                      registered=m["residual_kind"] == "registered" and rc.register,
                      registration={k: list(v) if isinstance(v, tuple) else v
                                    for k, v in asdict(rc.registration).items()},
                      crop_scale=float(params["train"]["crop_scale"]), out_size=int(m["image_size"]))


def registry_dir(params: dict) -> Path:
    return Path(resolve_path(params["registry"]["output_dir"]))


def prior_scores(params: dict, split: str, nlg: bool = True, n_boot: int = 10) -> dict | None:
    """Scores of the question prior (models.ablation.question_prior) on `split` of the prepared
    pairs, for the question types training used; None when the data is not prepared here."""
    import io

    import polars as pl

    from models.ablation import question_prior_scores
    from pipelines.commands.train import training_question_types
    from pipelines.resources import storage_for

    store = storage_for(resolve_path(params["data"]["prepared_root"]))
    if not store.exists("pairs.parquet"):
        return None
    pairs = pl.read_parquet(io.BytesIO(store.read_bytes("pairs.parquet")),
                            columns=["question_type", "question", "answer", "split"])
    return question_prior_scores(pairs, split, training_question_types(params), nlg=nlg,
                                 n_boot=n_boot, seed=params["evaluate"]["seed"])


def register_from_params(params: dict, metrics_file: Path | None = None):
    """Register the last training run's best checkpoint (train.output_dir) as a new version."""
    from models import serving
    from models.tracking import client_for

    out = Path(resolve_path(params["train"]["output_dir"]))
    train_metrics = out / "metrics.json"
    if not train_metrics.exists() or not (out / "best").is_dir():
        raise UserError(f"{train_metrics}: no trained model; run `spotdiff train` first")
    tm = json.loads(train_metrics.read_text())
    if not tm.get("mlflow_run_id"):
        raise UserError(f"{train_metrics}: the run was not tracked in MLflow (no mlflow_run_id)")
    val = {k[len("val_"):]: float(v) for k, v in (tm.get("val") or {}).items()
           if k.startswith("val_") and isinstance(v, (int, float))}
    prior = prior_scores(params, "val", nlg=False)
    if prior is not None:  # the promotion gate's floor for this very split
        val["prior_change_f1"] = float(prior["change_f1"])
    test = {k: float(v) for k, v in (tm.get("test") or {}).items() if isinstance(v, (int, float))}
    if metrics_file is not None and metrics_file.exists():  # the evaluate stage's re-scoring
        test.update({k: float(v) for k, v in json.loads(metrics_file.read_text()).items()
                     if isinstance(v, (int, float))})
    uri = tracking_uri(params)
    tags = client_for(uri).get_run(tm["mlflow_run_id"]).data.tags
    reg = serving.log_and_register(
        uri, tm["mlflow_run_id"], out / "best", preprocess_from_params(params),
        params["registry"]["model_name"], val, test,
        data_version=tags.get("data_version", ""), git_commit=tags.get("git_commit", ""))
    folder = registry_dir(params)
    serving.export(reg.model_uri, folder / "model")
    evaluation_pictures(params, out, folder, tm["mlflow_run_id"], uri, log=reg.created)
    (folder / "registered.json").write_text(json.dumps(asdict(reg), indent=2, sort_keys=True) + "\n")
    return reg


def evaluation_pictures(params: dict, out: Path, folder: Path, run_id: str, uri: str, log: bool) -> dict:
    """Sample sheet, change confusion matrix and training curves of the registered run, written
    to the registry folder (Dagster metadata, DVC plots) and logged to its MLflow run."""
    import csv

    import mlflow

    from models import pictures
    from models.answer import Answerer
    from models.tracking import TRAIN_CURVES, client_for, use_store
    from pipelines.resources import storage_options

    records = [json.loads(line) for line in (out / "test_predictions.jsonl").read_text().splitlines() if line]
    answerer = Answerer(out / "best", preprocess_from_params(params))
    root = resolve_path(params["data"]["residuals_root"])
    files = {
        "sample_sheet": pictures.sample_sheet(answerer, root, records, folder / "sample_sheet.png",
                                              params["registry"]["sample_pairs"], storage_options(root)),
        "change_confusion": pictures.confusion_png(pictures.change_confusion(records),
                                                   folder / "change_confusion.png"),
    }
    client = client_for(uri)
    by_step: dict[int, dict] = {}
    for key in TRAIN_CURVES:
        for m in client.get_metric_history(run_id, key):
            by_step.setdefault(m.step, {"step": m.step})[key.split("/")[-1]] = m.value
    with (folder / "train_curves.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, ["step"] + [k.split("/")[-1] for k in TRAIN_CURVES])
        w.writeheader()
        w.writerows(by_step[s] for s in sorted(by_step))
    files["train_curves"] = folder / "train_curves.csv"
    if log:
        use_store(uri)
        with mlflow.start_run(run_id=run_id):
            for f in files.values():
                mlflow.log_artifact(str(f), artifact_path="evaluation")
    return files


def promote_from_params(params: dict):
    from mlflow.exceptions import MlflowException

    from models.promotion import PromotionRefused, PromotionRule
    from models.registry import promote
    from models.tracking import client_for, is_read_only_error, quiet_store_errors, require_store

    r = params["registry"]
    rule = PromotionRule.from_params(r)
    uri = tracking_uri(params)
    require_store(uri)  # else MLflow creates an empty store and promote says "no candidate"
    try:
        with quiet_store_errors():
            res = promote(client_for(uri), rule, r["model_name"])
    except (PromotionRefused, LookupError) as e:
        raise UserError(f"promote {r['model_name']}: {e}") from e
    except MlflowException as e:
        if not is_read_only_error(e):
            raise
        first = next((line for line in str(e).splitlines() if line.strip()), "")
        raise UserError(f"promote {r['model_name']}: the tracking store {uri} cannot be written ({first})") from e
    folder = registry_dir(params)
    folder.mkdir(parents=True, exist_ok=True)
    summary = {"name": res.name, "candidate": res.candidate_version, "champion_before": res.champion_before,
               "champion": res.champion_after, "promoted": res.decision.promote,
               "code": res.decision.code, "reason": res.decision.reason}
    (folder / "champion.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return res, summary


def load_answerer(model_uri: str, tracking: str):
    """The Answerer of a model spotdiff logged, built with this installation's code from the
    folder's weights and preprocessing: nothing in the folder runs (models/model_folder.py)."""
    import tempfile

    from models.answer import Answerer, Preprocess
    from models.model_folder import ModelFolderError, artifacts, local_folder

    with tempfile.TemporaryDirectory(prefix="spotdiff-model-") as tmp:
        try:
            arts = artifacts(local_folder(model_uri, Path(tmp), tracking))
        except ModelFolderError as e:
            raise UserError(str(e)) from None
        try:
            prep = Preprocess.from_dict(arts.preprocess)
        except TypeError as e:
            raise UserError(f"{arts.folder}: preprocess.json does not fit this spotdiff ({e})") from None
        try:
            return Answerer(arts.checkpoint, prep)
        except (ValueError, KeyError, OSError, RuntimeError) as e:
            first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
            raise UserError(f"{arts.checkpoint}: not a checkpoint this spotdiff can load ({first})") from None


def checked_serving_folder(model_uri: str, tracking: str) -> Path:
    """A local copy of the model whose code is this installation's own: `mlflow models serve`
    imports the folder's code, so a folder carrying any other code is refused before it runs."""
    import tempfile

    from models.model_folder import ModelFolderError, check_code, local_folder

    try:
        folder = local_folder(model_uri, Path(tempfile.mkdtemp(prefix="spotdiff-serve-")), tracking)
        check_code(folder)
    except ModelFolderError as e:
        raise UserError(str(e)) from None
    return folder


def _check_output_file(option: str, path: Path) -> None:
    """A file the command will write must be writable as a file: found out only at the end,
    it was a traceback after the work (the answer) was done."""
    if path.is_dir():
        raise UserError(f"{option} {path}: is a directory; give a file name, e.g. {path / 'heatmap.png'}")
    if not path.parent.is_dir():
        raise UserError(f"{option} {path}: folder {path.parent} does not exist")
    if path.exists() and not path.is_file():
        raise UserError(f"{option} {path}: exists and is not a regular file")


def register(app: typer.Typer) -> None:
    @app.command("register")
    def register_cmd(
        metrics: Path = typer.Option(Path("metrics.json"), help="evaluation scores added as test.* tags"),
        profile: str = ProfileOpt,
    ) -> None:
        """Log the trained model as the MLflow pyfunc, register it (alias `candidate`), export it."""
        with user_errors():
            reg = register_from_params(params_for(profile), metrics)
        typer.echo(json.dumps(asdict(reg), indent=2))

    @app.command()
    def promote(profile: str = ProfileOpt) -> None:
        """Move alias `champion` to the candidate if the promotion rule says so (idempotent)."""
        with user_errors():
            _, summary = promote_from_params(params_for(profile))
        typer.echo(json.dumps(summary, indent=2))

    @app.command()
    def ask(
        question: str = typer.Argument("what has changed compared to the reference image?"),
        main: Path = typer.Option(..., "--main", help="main (current) image: JPEG/PNG"),
        ref: Path = typer.Option(..., "--ref", help="reference (earlier) image: JPEG/PNG"),
        model_uri: str = typer.Option(None, help="default: models:/<registry.model_name>@champion"),
        heatmap: Path = typer.Option(None, help="also write pair, residual and Grad-CAM here (PNG)"),
        profile: str = ProfileOpt,
    ) -> None:
        """Answer a question about a main/reference pair with the champion model."""
        from models.answer import InputError, answer_rows

        with user_errors():
            params = params_for(profile)
            for p in (main, ref):
                if not p.is_file():
                    raise UserError(f"{p}: no such file")
            if heatmap is not None:  # checked before the model answers, not after
                _check_output_file("--heatmap", heatmap)
            uri = model_uri or f"models:/{params['registry']['model_name']}@champion"
            answerer = load_answerer(uri, tracking_uri(params))
            try:
                out = answer_rows(answerer, [{"main_image": str(main), "ref_image": str(ref),
                                              "question": question}], allow_paths=True)
            except InputError as e:
                raise UserError(str(e)) from e
            answer = out[0]["answer"]
            typer.echo(answer)
            if heatmap is not None:
                from models.pictures import ask_heatmap

                ask_heatmap(answerer, main.read_bytes(), ref.read_bytes(), question, answer, heatmap)
                typer.echo(f"heatmap: {heatmap}", err=True)

    @app.command()
    def serve(
        model_uri: str = typer.Option(None, help="default: models:/<registry.model_name>@champion"),
        host: str = typer.Option("127.0.0.1", help="bind address; 127.0.0.1 keeps it off the network"),
        port: int = typer.Option(5001),
        profile: str = ProfileOpt,
    ) -> None:
        """Serve the champion over HTTP (MLflow's scoring app: POST /invocations), localhost by default."""
        with user_errors():
            params = params_for(profile)
            uri = model_uri or f"models:/{params['registry']['model_name']}@champion"
            folder = checked_serving_folder(uri, tracking_uri(params))
        from models.serving_app import MODEL_FOLDER_ENV

        # MLflow's scoring app (what `mlflow models serve` runs) behind spotdiff's body bound and
        # one-line error bodies (models/serving_app.py), on the folder checked above
        env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri(params), MODEL_FOLDER_ENV: str(folder)}
        os.execvpe(sys.executable, [sys.executable, "-m", "uvicorn", "models.serving_app:app",
                                    "--host", host, "--port", str(port)], env)
