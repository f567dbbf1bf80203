"""`spotdiff train [--profile smoke] [--set train.epochs=3 ...] [--run-name NAME]`

Reads params.yaml, turns it into the plain specs models/train.py takes, and launches the Ray
Train run. The same `launch()` backs the Dagster asset `real_model`, the DVC stage `train` and
`spotdiff ablate`."""

from __future__ import annotations

import os
import secrets
from datetime import datetime, timezone

import typer
import yaml

from pipelines.commands.common import UserError, params_for, user_errors
from pipelines.params import flatten, repo_root, resolve_path

TRAIN_LOOP_KEYS = ("epochs", "pairs_per_batch", "lr", "weight_decay", "warmup_steps", "grad_clip",
                   "seed", "deterministic", "log_every", "crop_scale", "brightness", "contrast",
                   "sharpness", "shuffle_buffer", "val_max_pairs", "val_num_beams",
                   "select_metric", "select_mode", "swap_prob")


def training_question_types(params: dict) -> tuple[str, ...]:
    """What the decoder trains on: train.question_types, else the types the pairs were built with."""
    return tuple(params["train"].get("question_types") or params["pairs"]["question_types"])


def parse_sets(sets: list[str]) -> dict:
    """["train.epochs=3", "model.use_rfa=false"] -> nested overrides (values parsed as YAML)."""
    out: dict = {}
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected section.key=value")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    return out


def tracking_uri(params: dict) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params["tracking"]["uri"]
    # sqlite:///file:PATH?mode=ro&uri=true is SQLite's URI form (a read-only store): left as is
    if uri.startswith("sqlite:///") and not uri.startswith(("sqlite:////", "sqlite:///file:")):
        uri = "sqlite:///" + resolve_path(uri[len("sqlite:///"):])
    return uri


def new_run_name(profile: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"real-{profile}-{stamp}-{secrets.token_hex(3)}"


def launch(params: dict, run_name: str | None = None, tags: dict | None = None):
    """Everything a training run needs, from resolved params. Returns models.train.FitResult."""
    from assets.prepare import FINDING_TARGETS
    from assets.shards import MANIFEST_NAME
    from models.tracking import TrackingUnreachable, check_reachable, data_version, git_commit
    from models.train import RunSpec, ScalingSpec, TrackingSpec, fit
    from models.train_loop import DataSpec, TrainConfig
    from pipelines.resources import storage_for

    try:
        check_reachable(tracking_uri(params))  # before any data is read or Ray is started
    except TrackingUnreachable as e:
        raise UserError(str(e)) from e
    t, d = params["train"], params["data"]
    # Local folders or s3:// URLs alike, through the one storage layer (endpoint from env).
    residuals, prepared = storage_for(resolve_path(d["residuals_root"])), storage_for(resolve_path(d["prepared_root"]))
    for store, name in ((residuals, MANIFEST_NAME), (prepared, "pairs.parquet")):
        if not store.exists(name):
            raise UserError(f"{store.url(name)}: not found; materialize the data first "
                            "(`dagster asset materialize` or `dvc repro residuals`)")
    if "model" not in params:
        raise UserError("params.yaml: no `model` section")
    from pipelines.commands.pretrain import encoder_for_training

    model_cfg = {**params["model"], "pretrained_resnet": encoder_for_training(params)}
    name = run_name or t["run_name"] or new_run_name(params["profile"])
    train_cfg = TrainConfig(**{k: t[k] for k in TRAIN_LOOP_KEYS},
                            question_types=training_question_types(params))
    tr = params["tracking"]
    return fit(
        train_cfg, model_cfg,
        DataSpec(residuals.root, prepared.url("pairs.parquet"), tokenizer_dir="",
                 residuals_options=residuals.options, pairs_options=prepared.options,
                 targets_parquet=(prepared.url(FINDING_TARGETS) if prepared.exists(FINDING_TARGETS)
                                  else None)),
        ScalingSpec(t["num_workers"], t["use_gpu"], dict(t["resources_per_worker"])),
        RunSpec(name, resolve_path(t["storage_path"]), resolve_path(t["output_dir"]), t["max_failures"],
                t["num_to_keep"]),
        TrackingSpec(tracking_uri(params), tr["experiment"], tr["system_metrics"],
                     tr["system_metrics_interval_s"], tr["sample_predictions"]),
        params_flat=flatten(params),
        tags={"git_commit": git_commit(repo_root()),
              "data_version": data_version(residuals.read_bytes(MANIFEST_NAME),
                                           prepared.read_bytes("pairs.parquet")),
              "profile": params["profile"], **(tags or {})},
        test_num_beams=t["test_num_beams"],
        score_kwargs=({"n_boot": params["evaluate"]["bootstrap"], "seed": params["evaluate"]["seed"]}
                      if "evaluate" in params else None),
    )


def register(app: typer.Typer) -> None:
    from pipelines.commands import ablate

    ablate.register(app)  # `spotdiff ablate` rides on train's launch(); cli.py lists modules

    @app.command()
    def train(
        profile: str = typer.Option(None, help="params.yaml profile (default: params' `profile`)"),
        set_: list[str] = typer.Option([], "--set", help="override, e.g. train.epochs=3 (repeatable)"),
        run_name: str = typer.Option(None, help="reuse a run name to resume that run"),
    ) -> None:
        """Train ReAl on Ray Train; log to MLflow; write the best checkpoint and metrics.json."""
        import json

        with user_errors():
            params = params_for(profile, parse_sets(set_) or None)
            result = launch(params, run_name)
        typer.echo(json.dumps({"run_name": result.run_name, "mlflow_run_id": result.mlflow_run_id,
                               "best_checkpoint": str(result.best_checkpoint),
                               "steps": result.steps, "test": result.test_metrics}, indent=2))
