"""The model registry from params: register the trained model (with its evaluation pictures),
promote it by the rule, check the aliases, and load a registered model to answer or serve."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from assets.params import UserError, resolve_path, storage_for, storage_options
from models.lifecycle.runs import tracking_uri, training_question_types


def preprocess_from_params(params: dict):
    """What the residual assets did to the training images, for the served model to repeat."""
    from assets.prepare import residual_config
    from models.answer import Preprocess

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

    store = storage_for(resolve_path(params["data"]["prepared_root"]))
    if not store.exists("pairs.parquet"):
        return None
    pairs = pl.read_parquet(io.BytesIO(store.read_bytes("pairs.parquet")),
                            columns=["question_type", "question", "answer", "split"])
    return question_prior_scores(pairs, split, training_question_types(params), nlg=nlg,
                                 n_boot=n_boot, seed=params["evaluate"]["seed"])


def register(params: dict, metrics_file: Path | None = None):
    """Register the last training run's best checkpoint (train.output_dir) as a new version;
    metrics_file (default: evaluate.metrics_file) gives its test.* tags."""
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
    metrics_file = metrics_file or Path(resolve_path(params["evaluate"]["metrics_file"]))
    report = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}  # the evaluation's
    test.update({k: float(v) for k, v in report.items() if isinstance(v, (int, float))})
    uri = tracking_uri(params)
    tags = client_for(uri).get_run(tm["mlflow_run_id"]).data.tags
    reg = serving.log_and_register(
        uri, tm["mlflow_run_id"], out / "best", preprocess_from_params(params),
        params["registry"]["model_name"], val, test,
        data_version=tags.get("data_version", ""), git_commit=tags.get("git_commit", ""))
    folder = registry_dir(params)
    serving.export(reg.model_uri, folder / "model")
    evaluation_pictures(params, out, folder, tm["mlflow_run_id"], uri, log=reg.created)
    write_model_card(params, reg, report or {**test, "per_type": {}}, val, tags, folder)
    (folder / "registered.json").write_text(json.dumps(asdict(reg), indent=2, sort_keys=True) + "\n")
    return reg


def write_model_card(params: dict, reg, report: dict, val: dict, tags: dict, folder: Path) -> str:
    """The version's model card (models/model_card.py): its MLflow description and
    folder/model_card.md. Rewritten on every register, so a re-run completes an interrupted one."""
    from assets.params import flatten, repo_root
    from models.model_card import dvc_hash, model_card
    from models.tracking import client_for

    lock = repo_root() / "dvc.lock"
    lock_text = lock.read_text() if lock.is_file() and lock.stat().st_size < 1 << 20 else None
    card = model_card(reg.name, reg.version, reg.run_id, flatten(params), report, val,
                      tags.get("data_version", ""), dvc_hash(lock_text, params["data"]["residuals_root"]),
                      tags.get("git_commit", ""), f"runs:/{reg.run_id}/evaluation/sample_sheet.png")
    client_for(tracking_uri(params)).update_model_version(reg.name, reg.version, description=card)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_card.md").write_text(card)
    return card


def evaluation_pictures(params: dict, out: Path, folder: Path, run_id: str, uri: str, log: bool) -> dict:
    """Sample sheet, change confusion matrix and training curves of the registered run, written
    to the registry folder (Dagster metadata, DVC plots) and logged to its MLflow run."""
    import csv

    import mlflow

    from models import pictures
    from models.answer import Answerer
    from models.tracking import TRAIN_CURVES, client_for, use_store

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


def promote(params: dict):
    """Apply the promotion rule (models/promotion.py) to the candidate; writes champion.json."""
    from mlflow.exceptions import MlflowException

    from models.promotion import PromotionRefused, PromotionRule
    from models.registry import promote as promote_candidate
    from models.tracking import client_for, is_read_only_error, quiet_store_errors, require_store

    r = params["registry"]
    rule = PromotionRule.from_params(r)
    uri = tracking_uri(params)
    require_store(uri)  # else MLflow creates an empty store and promote says "no candidate"
    try:
        with quiet_store_errors():
            res = promote_candidate(client_for(uri), rule, r["model_name"])
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


def promotion_check(params: dict) -> tuple[bool, dict]:
    """Does the champion alias agree with the promotion rule re-applied to the registry's tags?"""
    from models.promotion import PromotionRule
    from models.registry import aliases_agree
    from models.tracking import client_for

    r = params["registry"]
    return aliases_agree(client_for(tracking_uri(params)), PromotionRule.from_params(r), r["model_name"])


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
