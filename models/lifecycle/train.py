"""Train ReAl from params: the plain specs models/train.py takes, then one Ray Train run."""

from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path

from assets.params import UserError, flatten, repo_root, resolve_path, storage_for
from models.lifecycle.runs import new_run_name, tracking_uri, training_question_types


def train(params: dict, run_name: str | None = None, tags: dict | None = None):
    """Everything a training run needs, from resolved params. Returns models.train.FitResult;
    `reused` when train.output_dir already held the model of the same inputs (models/lifecycle/reuse.py)."""
    from assets.prepare import FINDING_TARGETS
    from assets.shards import MANIFEST_NAME
    from models.lifecycle.pretrain import encoder_for_training
    from models.lifecycle.reuse import forget, inputs_key, kept_model, remember
    from models.lifecycle.writer_lock import sole_writer
    from models.tracking import TrackingUnreachable, check_reachable, data_version, git_commit
    from models.train import FitResult, RunSpec, ScalingSpec, TrackingSpec, fit
    from models.train_loop import DataSpec, TrainConfig

    uri = tracking_uri(params)
    try:
        check_reachable(uri)  # before any data is read or Ray is started
    except TrackingUnreachable as e:
        raise UserError(str(e)) from e
    t, d = params["train"], params["data"]
    log_dir = Path(resolve_path(t["log_dir"]))
    try:  # found out after Ray started, it was a traceback from inside the run
        log_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(log_dir, os.W_OK):
            raise PermissionError("not writable")
    except OSError as e:
        raise UserError(f"train.log_dir {log_dir}: cannot write the run's log there ({e.strerror or e})") from e
    # Local folders or s3:// URLs alike, through the one storage layer (endpoint from env).
    residuals, prepared = storage_for(resolve_path(d["residuals_root"])), storage_for(resolve_path(d["prepared_root"]))
    for store, name in ((residuals, MANIFEST_NAME), (prepared, "pairs.parquet")):
        if not store.exists(name):
            raise UserError(f"{store.url(name)}: not found; materialize the data first "
                            "(`dagster asset materialize` or `dvc repro residuals`)")
    if "model" not in params:
        raise UserError("params.yaml: no `model` section")
    encoder = encoder_for_training(params)
    model_cfg = {**params["model"], "pretrained_resnet": encoder}
    version = data_version(residuals.read_bytes(MANIFEST_NAME), prepared.read_bytes("pairs.parquet"))
    targets = prepared.read_bytes(FINDING_TARGETS) if prepared.exists(FINDING_TARGETS) else None
    out = Path(resolve_path(t["output_dir"]))
    key = inputs_key(params, training_question_types(params), version, targets, encoder)
    kept = kept_model(params, run_name, out, key, uri)
    if kept is not None:
        return FitResult(kept["run_name"], kept["mlflow_run_id"], out / "best",
                         {**kept["val"], "epoch": kept.get("best_epoch")}, kept["test"], kept["steps"], out,
                         reused=True)
    # a kept model needs no workers; a new run does (a smaller machine may still keep one)
    check_local_resources(t["num_workers"], t["use_gpu"], dict(t["resources_per_worker"]))
    with sole_writer(out):  # one training at a time writes output_dir
        forget(out)
        name = run_name or t["run_name"] or new_run_name(params["profile"])
        # every loop setting params.yaml's train section names (the rest of it is Ray's and the run's)
        loop_keys = {f.name for f in fields(TrainConfig)} & set(t) - {"question_types"}
        train_cfg = TrainConfig(**{k: t[k] for k in sorted(loop_keys)}, question_types=training_question_types(params))
        tr = params["tracking"]
        result = fit(
            train_cfg, model_cfg,
            DataSpec(residuals.root, prepared.url("pairs.parquet"), tokenizer_dir="",
                     residuals_options=residuals.options, pairs_options=prepared.options,
                     targets_parquet=prepared.url(FINDING_TARGETS) if targets is not None else None),
            ScalingSpec(t["num_workers"], t["use_gpu"], dict(t["resources_per_worker"])),
            RunSpec(name, resolve_path(t["storage_path"]), str(out), t["max_failures"],
                    t["num_to_keep"], log_file=str(log_dir / f"{name}.log")),
            TrackingSpec(uri, tr["experiment"], tr["system_metrics"],
                         tr["system_metrics_interval_s"], tr["sample_predictions"]),
            params_flat=flatten(params),
            tags={"git_commit": git_commit(repo_root()),
                  "data_version": version,
                  "profile": params["profile"], **(tags or {})},
            test_num_beams=t["test_num_beams"],
            score_kwargs=({"n_boot": params["evaluate"]["bootstrap"], "seed": params["evaluate"]["seed"]}
                          if "evaluate" in params else None),
        )
        remember(out, key, result.run_name, result.mlflow_run_id)
        return result


def check_local_resources(num_workers: int, use_gpu: bool, per_worker: dict) -> None:
    """A local Ray run that asks for more CPUs or GPUs than this machine has cannot start: Ray
    Train waits 60 s for the worker group, logs a ControllerError traceback and tries again
    (seen: 3 workers on 2 CPUs, still waiting after 90 s). Refuse it in one line before Ray
    starts. Not checked on a cluster (RAY_ADDRESS set, or Ray already running), where an
    autoscaler may add the nodes."""
    import ray
    import torch

    if os.environ.get("RAY_ADDRESS") or ray.is_initialized():
        return
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    need_cpu = num_workers * float(per_worker.get("CPU", 1))
    if need_cpu > cpus:
        raise UserError(f"train.num_workers={num_workers} x resources_per_worker.CPU="
                        f"{per_worker.get('CPU', 1)} needs {need_cpu:g} CPUs; this machine has {cpus} "
                        "(lower them, or point RAY_ADDRESS at a cluster)")
    if use_gpu:
        gpus = torch.cuda.device_count()
        need_gpu = num_workers * float(per_worker.get("GPU", 1))
        if need_gpu > gpus:
            raise UserError(f"train.use_gpu with train.num_workers={num_workers} needs {need_gpu:g} GPUs; "
                            f"this machine has {gpus} (lower train.num_workers, set train.use_gpu: false, "
                            "or point RAY_ADDRESS at a cluster)")
