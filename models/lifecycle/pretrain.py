"""Encoder pretraining from params (models/pretrain.py does the training): the stage `train`
takes its encoder from, skipped cleanly when it is switched off or the user brings weights."""

from __future__ import annotations

import json
from pathlib import Path

from assets.params import UserError, flatten, resolve_path, storage_for
from models.lifecycle.runs import new_run_name, tracking_uri


def pretrain_dir(params: dict) -> Path:
    return Path(resolve_path(params["pretrain"]["output_dir"]))


def skip_reason(params: dict) -> str | None:
    """Why the stage trains nothing: the user brought weights, or it is switched off."""
    if params["model"].get("pretrained_resnet"):
        return "model.pretrained_resnet is set: those weights initialise the encoders"
    if int(params["pretrain"]["epochs"]) <= 0:
        return "pretrain.epochs is 0"
    return None


def encoder_for_training(params: dict) -> str | None:
    """The weights `train` starts E_I and E_R from: the user's, else this stage's, else none."""
    from models.pretrain import ENCODER_FILE

    if params["model"].get("pretrained_resnet") or skip_reason(params):
        return params["model"].get("pretrained_resnet")
    path = pretrain_dir(params) / ENCODER_FILE
    if not path.is_file():
        raise UserError(f"{path}: not found; run the pretraining stage first "
                        "(`spotdiff pretrain`, or set pretrain.epochs: 0)")
    return str(path)


def pretrain(params: dict) -> dict:
    """Run the stage; always writes pretrain.json (with `skipped` when it trains nothing)."""
    from assets.prepare import FINDING_TARGETS
    from assets.shards import MANIFEST_NAME
    from models.pretrain import REPORT_FILE, PretrainConfig, data_batches
    from models.pretrain import pretrain as pretrain_encoder
    from models.tracking import MlflowTracker, TrackingUnreachable, check_reachable, open_run
    from models.train_loop import DataSpec, TrainConfig

    out = pretrain_dir(params)
    reason = skip_reason(params)
    if reason:
        out.mkdir(parents=True, exist_ok=True)
        report = {"skipped": reason}
        (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
        return report
    d, t, p = params["data"], params["train"], params["pretrain"]
    residuals, prepared = storage_for(resolve_path(d["residuals_root"])), storage_for(resolve_path(d["prepared_root"]))
    for store, name in ((residuals, MANIFEST_NAME), (prepared, FINDING_TARGETS), (prepared, "pairs.parquet")):
        if not store.exists(name):
            raise UserError(f"{store.url(name)}: not found; materialize the data first (`dvc repro residuals`)")
    data = DataSpec(residuals.root, prepared.url("pairs.parquet"), "", targets_parquet=prepared.url(FINDING_TARGETS),
                    residuals_options=residuals.options, pairs_options=prepared.options)
    aug = TrainConfig(question_types=("all",), seed=int(t["seed"]), crop_scale=t["crop_scale"],
                      brightness=t["brightness"], contrast=t["contrast"], sharpness=t["sharpness"],
                      shuffle_buffer=t["shuffle_buffer"])
    m = params["model"]
    cfg = PretrainConfig(epochs=int(p["epochs"]), pairs_per_batch=int(p["pairs_per_batch"]), lr=float(p["lr"]),
                         weight_decay=float(t["weight_decay"]), seed=int(t["seed"]),
                         deterministic=bool(t["deterministic"]))
    train_batches, n_train = data_batches(data, "train", aug, m, cfg.pairs_per_batch, augment=True)
    val_batches, _ = data_batches(data, "val", aug, m, cfg.pairs_per_batch, augment=False)
    steps = -(-n_train // cfg.pairs_per_batch)
    if steps == 0:
        raise UserError(f"{prepared.url('pairs.parquet')}: no training pairs to pretrain on")
    uri = tracking_uri(params)
    try:
        check_reachable(uri)
    except TrackingUnreachable as e:
        raise UserError(str(e)) from e
    tr = params["tracking"]
    run_id = open_run(uri, tr["experiment"], new_run_name(params["profile"], "pretrain"),
                      flatten({"pretrain": p, "model.backbone": m["backbone"]}), {"stage": "pretrain"})
    tracker = MlflowTracker(uri, run_id, False, 10)
    from rich.progress import Progress

    status = "FAILED"
    try:
        with Progress(transient=True) as bar:
            task = bar.add_task("pretrain", total=steps * cfg.epochs)
            report = pretrain_encoder(cfg, m["backbone"], train_batches,
                              lambda: val_batches(0), steps, out, log=tracker.log_metrics,
                              progress=lambda n: bar.advance(task, n))
        status = "FINISHED"
    finally:
        tracker.close(status)
    report["mlflow_run_id"] = run_id
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report
