"""Train ReAl on Ray Train (V2 `TorchTrainer`): the orchestration around models/train_loop.py.

    spotdiff train [--profile smoke]            (models/lifecycle/train.py from params)

The driver trains the tokenizer, opens the MLflow run, launches the workers (DDP: gloo on CPU,
nccl + bf16 autocast on GPU), then picks the best checkpoint *by validation*, scores the test
split once, and writes metrics.json + the predictions JSONL. Checkpoints go through
`ray.train.report` to `storage_path/<run name>/` (a local folder or s3://); a worker failure
restarts the group from the latest checkpoint (FailureConfig), and re-running with the same run
name and storage path resumes a run the driver lost."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from models import checkpoint as ckpt
from models.metrics import DEFAULT_BOOTSTRAP, SCORED_WITH, scored_with
from models.train_loop import DataSpec, NullTracker, Runtime, TrainConfig, train

TOKENIZER_TRAIN_SPLIT = "train"


@dataclass(frozen=True)
class ScalingSpec:
    num_workers: int = 2
    use_gpu: bool = False
    resources_per_worker: dict = field(default_factory=lambda: {"CPU": 1})


@dataclass(frozen=True)
class RunSpec:
    name: str
    storage_path: str          # absolute local path or s3://bucket/prefix
    output_dir: str            # where the best checkpoint, predictions and metrics.json land
    max_failures: int = 2
    num_to_keep: int = 2
    log_file: str | None = None  # Ray's and MLflow's output goes here, progress to the terminal (models/chatter.py)


@dataclass(frozen=True)
class TrackingSpec:
    uri: str | None = None     # None: no MLflow (tests of the loop alone)
    experiment: str = "spotdiff-real"
    system_metrics: bool = True
    system_metrics_interval_s: float = 10.0
    sample_predictions: int = 50


@dataclass
class FitResult:
    run_name: str
    mlflow_run_id: str | None
    best_checkpoint: Path
    val_metrics: dict
    test_metrics: dict
    steps: int
    output_dir: Path
    reused: bool = False  # the model of the same inputs was already there: no new run (models/lifecycle/reuse.py)


def train_tokenizer_files(pairs_parquet: str, vocab_size: int, question_types,
                          options: dict | None = None) -> dict[str, str]:
    """The run's tokenizer, as {file name: text}: small enough to ship to every worker in the
    train_loop_config, so workers on other nodes need no shared disk for it."""
    from models.data import load_questions
    from models.tokenizer import train_tokenizer

    questions = load_questions(pairs_parquet, TOKENIZER_TRAIN_SPLIT, question_types, options)
    texts = [t for qas in questions.values() for qa in qas for t in (qa.question, qa.answer)]
    if not texts:
        raise ValueError(f"{pairs_parquet}: no {TOKENIZER_TRAIN_SPLIT} questions to train the tokenizer on")
    tok = train_tokenizer(texts, vocab_size)
    with tempfile.TemporaryDirectory() as d:
        tok.save_pretrained(d)
        return {p.name: p.read_text() for p in Path(d).iterdir() if p.is_file()}


def write_files(files: dict[str, str], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def all_reduce_min(n: int) -> int:
    """The smallest n over the ranks (steps per epoch: every rank must take as many). nccl
    reduces CUDA tensors only, so under it the count travels on this rank's GPU."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return n
    device = (torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl"
              else torch.device("cpu"))
    t = torch.tensor([n], dtype=torch.long, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def worker_loop(config: dict) -> None:
    """Runs on every Ray Train worker."""
    import ray.train
    import ray.train.torch

    from models.tracking import MlflowTracker

    import logging

    # Ray Train logs every report and checkpoint at INFO from inside the worker (four lines an
    # epoch on the terminal); the epoch's validation line already says it
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if config["threads"]:
        torch.set_num_threads(config["threads"])
    work = Path(tempfile.mkdtemp(prefix=f"spotdiff-w{rank}-"))
    data = replace(DataSpec(**config["data"]),
                   tokenizer_dir=str(write_files(config["tokenizer_files"], work / "tokenizer")))
    resume_dir = None
    latest = ray.train.get_checkpoint()
    if latest is not None:
        resume_dir = Path(latest.to_directory(str(work / "resume")))

    def report(metrics: dict, folder: Path | None) -> None:
        checkpoint = ray.train.Checkpoint.from_directory(str(folder)) if folder else None
        ray.train.report(metrics, checkpoint=checkpoint,
                         checkpoint_dir_name=f"epoch_{int(metrics['epoch']):04d}")
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    tracking = config["tracking"]
    tracker = (MlflowTracker(tracking["uri"], config["mlflow_run_id"], tracking["system_metrics"],
                             tracking["system_metrics_interval_s"])
               if rank == 0 and config["mlflow_run_id"] else NullTracker())
    device = ray.train.torch.get_device()
    rt = Runtime(rank=rank, world_size=world, device=device,
                 prepare_model=lambda m: ray.train.torch.prepare_model(m),
                 report=report, min_across_ranks=all_reduce_min, resume_dir=resume_dir,
                 tracker=tracker)
    status = "FAILED"
    try:
        train(TrainConfig(**config["train"]), config["model"], data, rt)
        status = "RUNNING"  # the driver finishes the run after test scoring
    finally:
        if isinstance(tracker, MlflowTracker):
            tracker.close(status)
        shutil.rmtree(work, ignore_errors=True)


def _train_cfg_dict(cfg: TrainConfig) -> dict:
    d = asdict(cfg)
    d["question_types"] = tuple(d["question_types"])
    return d


def fit(train_cfg: TrainConfig, model_cfg: dict, data: DataSpec, scaling: ScalingSpec, run: RunSpec,
        tracking: TrackingSpec, params_flat: dict | None = None, tags: dict | None = None,
        threads_per_worker: int | None = None, test_num_beams: int | None = None,
        score_kwargs: dict | None = None) -> FitResult:
    """Train, select on validation, score test once; returns where everything landed. What Ray,
    MLflow and the scorers print goes to run.log_file (when set); the terminal gets the training's
    progress and validation lines (models/chatter.py)."""
    from models.chatter import chatter_to_log

    with chatter_to_log(run.log_file):
        return _fit(train_cfg, model_cfg, data, scaling, run, tracking, params_flat, tags,
                    threads_per_worker, test_num_beams, score_kwargs)


def _fit(train_cfg: TrainConfig, model_cfg: dict, data: DataSpec, scaling: ScalingSpec, run: RunSpec,
         tracking: TrackingSpec, params_flat: dict | None, tags: dict | None, threads_per_worker: int | None,
         test_num_beams: int | None, score_kwargs: dict | None) -> FitResult:
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from models import tracking as trk

    tok_files = train_tokenizer_files(data.pairs_parquet, int(model_cfg["vocab_size"]),
                                      train_cfg.question_types, data.pairs_options)
    out = Path(run.output_dir)
    shutil.rmtree(out / "tokenizer", ignore_errors=True)  # DVC leaves it (persist): no stale file stays
    tok_dir = write_files(tok_files, out / "tokenizer")
    from models.tokenizer import load_tokenizer
    tokenizer = load_tokenizer(tok_dir)
    model_cfg = {**model_cfg, "vocab_size": len(tokenizer)}

    run_id = None
    if tracking.uri:
        run_id = trk.find_run(tracking.uri, tracking.experiment, run.name) or trk.open_run(
            tracking.uri, tracking.experiment, run.name, params_flat or {},
            {"ray_run_name": run.name, **(tags or {})})

    cpus = (scaling.resources_per_worker or {}).get("CPU", 1)
    config = {
        "train": _train_cfg_dict(train_cfg), "model": model_cfg,
        "data": asdict(replace(data, tokenizer_dir="")), "tokenizer_files": tok_files,
        "tracking": asdict(tracking), "mlflow_run_id": run_id,
        "threads": threads_per_worker or int(cpus),
    }
    trainer = TorchTrainer(
        worker_loop, train_loop_config=config,
        torch_config=TorchConfig(backend="nccl" if scaling.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=scaling.num_workers,
                                               use_gpu=scaling.use_gpu,
                                               resources_per_worker=scaling.resources_per_worker),
        run_config=ray.train.RunConfig(
            name=run.name, storage_path=run.storage_path,
            failure_config=ray.train.FailureConfig(max_failures=run.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=run.num_to_keep, checkpoint_score_attribute=train_cfg.select_metric,
                checkpoint_score_order=train_cfg.select_mode)),
    )
    try:
        if not ray.is_initialized():
            # No dashboard (2 cores), so Ray Train's placement-group cleaner cannot reach the
            # state API and warns every few seconds (2,271 of a default run's ~3,100 lines);
            # Ray-side loggers speak from ERROR up. Whatever they still say goes to run.log_file.
            ray.init(include_dashboard=False, logging_config=ray.LoggingConfig(log_level="ERROR"))
        result = trainer.fit()
    except Exception:
        if run_id:  # the run must not stay RUNNING forever in the MLflow UI
            trk.fail_run(tracking.uri, run_id)
        raise
    best_ckpt, val_metrics = _best(result, train_cfg)
    best_dir = out / "best"
    shutil.rmtree(best_dir, ignore_errors=True)
    best_ckpt.to_directory(str(best_dir))
    report, predictions = score_test(best_dir, data, train_cfg, test_num_beams, score_kwargs)
    preds_path = out / "test_predictions.jsonl"
    preds_path.write_text("".join(json.dumps(r) + "\n" for r in predictions))
    # what it scored, so the evaluation step reuses this report instead of scoring again
    kw = score_kwargs or {}
    scored = scored_with(preds_path, kw.get("n_boot", DEFAULT_BOOTSTRAP), kw.get("seed", 0))
    (out / "test_report.json").write_text(json.dumps({**report, SCORED_WITH: scored}, indent=2, sort_keys=True))
    test_metrics = {k: float(v) for k, v in report.items() if isinstance(v, (int, float))}
    # per question type, flat for MLflow and metrics.json: type/<type>/<metric>
    test_metrics.update(per_type_flat(report))
    steps = int(result.metrics["step"])
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps({
        "run_name": run.name, "mlflow_run_id": run_id, "steps": steps,
        "best_epoch": val_metrics.get("epoch"),
        "val": {k: v for k, v in val_metrics.items() if k.startswith("val_")},
        "test": test_metrics}, indent=2, sort_keys=True))
    if run_id:
        trk.close_run(tracking.uri, run_id, test_metrics=test_metrics, best_checkpoint=best_dir,
                      predictions=predictions[:tracking.sample_predictions],
                      metrics_json=metrics_path, step=steps)
    return FitResult(run.name, run_id, best_dir, val_metrics, test_metrics, steps, out)


def _best(result, cfg: TrainConfig):
    """The checkpoint with the best *validation* metric among those Ray kept (it always keeps
    the latest too); ties go to the earlier epoch."""
    scored = [(c, m) for c, m in (result.best_checkpoints or []) if m.get(cfg.select_metric) is not None]
    if not scored:
        return result.checkpoint, dict(result.metrics)
    sign = 1 if cfg.select_mode == "max" else -1
    c, m = max(scored, key=lambda cm: (sign * cm[1][cfg.select_metric], -cm[1]["epoch"]))
    return c, dict(m)


def per_type_flat(report: dict) -> dict[str, float]:
    """A report's per question type scores, flat for MLflow and metrics.json:
    type/<type>/<metric>, the interval as type/<type>/ci95_lo and _hi."""
    out = {}
    for qt, row in report.get("per_type", {}).items():
        for k, v in row.items():
            if k == "ci95":
                out[f"type/{qt}/ci95_lo"], out[f"type/{qt}/ci95_hi"] = float(v[0]), float(v[1])
            elif isinstance(v, (int, float)):
                out[f"type/{qt}/{k}"] = float(v)
    return out


def score_test(best_dir: Path, data: DataSpec, cfg: TrainConfig, num_beams: int | None = None,
               score_kwargs: dict | None = None) -> tuple[dict, list[dict]]:
    """The test split, scored once, with the best-on-validation checkpoint, over every question
    type the pairs hold (training may learn fewer: the finding heads answer presence,
    abnormality and level questions too). Returns the full models.metrics report (headline over
    the difference questions + ci95 + per-template breakdown + per_type) and the predictions."""
    from models.metrics import score_predictions
    from models.data import batches
    from models.predict import predict
    from models.train_loop import collate_for, make_stream

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer, _ = ckpt.load_model_from(best_dir, device)
    model_cfg, _ = ckpt.read_config(best_dir)
    stream = make_stream(data, "test", replace(cfg, question_types=("all",)), model_cfg, augment=False)
    records = predict(model, batches(stream, collate_for(tokenizer, model_cfg), cfg.pairs_per_batch),
                      tokenizer, device, num_beams or cfg.val_num_beams)
    if not records:
        raise ValueError(f"{data.residuals_root}: no test pairs to score")
    report = score_predictions([r["prediction"] for r in records], [r["answer"] for r in records],
                               [r["question"] for r in records], question_types=[r["question_type"] for r in records],
                               **(score_kwargs or {}))
    return report, records
