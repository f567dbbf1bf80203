"""The per-worker training loop, plain PyTorch. Ray Train calls it from models/train.py with a
Runtime built from the Ray context; benchmarks/train_overhead.py calls it with the default
Runtime (one process, no Ray) to measure what Ray adds. Nothing here imports ray or mlflow:
distribution, checkpoint reporting and tracking come in through `Runtime`.

Per epoch: train on this rank's shards for the DDP-agreed number of steps; then rank 0 scores
the whole validation split (teacher-forced loss + greedy generation -> change F1) while the other
ranks wait in `report`; then every rank reports, rank 0 with the checkpoint folder."""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import torch

from models import checkpoint as ckpt
from models.augment import AugmentConfig
from models.data import (PairBatch, PairStream, batches, load_finding_targets, load_questions,
                         make_collate, seed_everything, steps_per_epoch)
from models.predict import LOSS_KEYS, mean_loss, predict


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    pairs_per_batch: int = 8
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 50
    grad_clip: float = 1.0
    seed: int = 0
    deterministic: bool = True       # same seed -> same metrics on CPU (slower kernels)
    log_every: int = 10              # steps between train metric logs
    question_types: tuple[str, ...] = ("difference",)
    crop_scale: float = 0.875
    brightness: float = 0.2
    contrast: float = 0.2
    sharpness: float = 0.5
    shuffle_buffer: int = 64
    swap_prob: float = 0.0           # share of training pairs read backwards (models/data.py)
    val_max_pairs: int | None = 200  # cap on validation pairs scored per epoch
    val_num_beams: int = 1
    select_metric: str = "val_change_f1"  # chooses the best checkpoint; validation only
    select_mode: str = "max"
    bf16: bool = True                # bf16 autocast on GPU and on CPUs with native bf16 (autocast_dtype)


@dataclass(frozen=True)
class DataSpec:
    """Where the data lives: local paths or URLs. The fsspec options (S3 endpoint) ride along
    so Ray workers on other nodes reach the same store; the entry point fills them from env."""

    residuals_root: str
    pairs_parquet: str
    tokenizer_dir: str
    targets_parquet: str | None = None  # finding_targets.parquet; None: no finding supervision
    train_split: str = "train"
    val_split: str = "val"
    residuals_options: dict = field(default_factory=dict)
    pairs_options: dict = field(default_factory=dict)


class Tracker(Protocol):
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_records(self, records: list[dict], name: str) -> None: ...


class NullTracker:
    """Ranks other than 0, and runs without tracking (nanochat's DummyWandb)."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def log_records(self, records: list[dict], name: str) -> None:
        pass


def _identity(model: torch.nn.Module) -> torch.nn.Module:
    return model


@dataclass
class Runtime:
    """What the loop needs from its launcher. Defaults: one process, no Ray, no tracking."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    prepare_model: Callable[[torch.nn.Module], torch.nn.Module] = _identity
    report: Callable[[dict, Path | None], None] = lambda metrics, folder: None
    min_across_ranks: Callable[[int], int] = lambda n: n
    resume_dir: Path | None = None
    tracker: Tracker = field(default_factory=NullTracker)


class PairsForward(torch.nn.Module):
    """encode_pairs + forward as one module call, so DDP's gradient hooks see the whole step
    (calling model.module.encode_pairs directly would bypass DDP's all-reduce bookkeeping)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, main, ref, residual, pair_index, question_ids, question_mask, answer_ids,
                answer_mask, finding_targets=None):
        feats = self.model.encode_pairs(main, ref, residual)
        return self.model(feats, pair_index, question_ids, question_mask, answer_ids, answer_mask,
                          finding_targets)


def build_model(model_cfg: dict, tokenizer) -> torch.nn.Module:
    from models.config import ModelConfig
    from models.model import ReAl
    from models.vocabulary import vocabulary_ids

    return ReAl(ModelConfig.from_dict(model_cfg), pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                **vocabulary_ids(tokenizer))


def lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warmup, then cosine to 10 % of the peak."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def autocast_dtype(bf16: bool, device: torch.device) -> torch.dtype | None:
    """bf16 autocast where the hardware computes in bf16: CUDA, and CPUs whose oneDNN kernels
    have native bf16 (AVX512-BF16 / AMX). Measured on a 2-core Xeon with AMX: a training step of
    8 pairs at 1 thread 1.09 s in fp32, 0.78 s under bf16 autocast (docs/benchmarks.md). Elsewhere
    (AVX2) bf16 would be emulated, slower than fp32: None there. Still deterministic on CPU: the
    same seed gives the same losses."""
    if not bf16:
        return None
    if device.type == "cuda":
        return torch.bfloat16
    if device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return None


def optimizer_for(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW without weight decay on biases and norms. fused: one kernel over all parameters
    instead of a dozen elementwise ops per tensor (optimizer step 121 -> 57 ms for ReAl's 25 M
    parameters at 1 CPU thread)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, fused=True)


def train_step(step_module: torch.nn.Module, batch: PairBatch, optimizer, scheduler,
               grad_clip: float, autocast_dtype: torch.dtype | None) -> dict[str, float]:
    """One optimizer step; returns the losses as floats (a device sync, once per step)."""
    device_type = batch.main.device.type
    with torch.autocast(device_type, dtype=autocast_dtype or torch.float32,
                        enabled=autocast_dtype is not None):
        out = step_module(batch.main, batch.ref, batch.residual, batch.pair_index,
                          batch.question_ids, batch.question_mask, batch.answer_ids,
                          batch.answer_mask, batch.finding_targets)
    out["loss"].backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(step_module.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    # "gate": gated fusion's mean gate, logged beside the losses when the module is on
    return {k: float(out[k].detach()) for k in LOSS_KEYS + ("gate",) if k in out}


def augment_config(cfg: TrainConfig, model_cfg: dict) -> AugmentConfig:
    return AugmentConfig(out_size=int(model_cfg["image_size"]), crop_scale=cfg.crop_scale,
                         brightness=cfg.brightness, contrast=cfg.contrast,
                         sharpness=cfg.sharpness)


def make_stream(data: DataSpec, split: str, cfg: TrainConfig, model_cfg: dict, augment: bool,
                rank: int = 0, world: int = 1, max_pairs: int | None = None) -> PairStream:
    questions = load_questions(data.pairs_parquet, split, cfg.question_types, data.pairs_options)
    targets = (load_finding_targets(data.targets_parquet, data.pairs_options)
               if data.targets_parquet and (model_cfg.get("finding_heads") or model_cfg.get("amif_align"))
               else None)
    return PairStream(data.residuals_root, split, questions, model_cfg["residual_kind"],
                      augment_config(cfg, model_cfg), augment=augment, seed=cfg.seed, rank=rank,
                      world=world, shuffle_buffer=cfg.shuffle_buffer, max_pairs=max_pairs,
                      storage_options=data.residuals_options, targets=targets,
                      swap_prob=cfg.swap_prob if augment else 0.0)


def collate_for(tokenizer, model_cfg: dict):
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    return make_collate(encode, tokenizer.pad_token_id, int(model_cfg["max_question_len"]),
                        int(model_cfg["max_answer_len"]), eos_id=tokenizer.eos_token_id)


def validate(model, data: DataSpec, cfg: TrainConfig, model_cfg: dict, tokenizer,
             device) -> tuple[dict[str, float], list[dict]]:
    """Rank 0 only: losses + generation scores on the validation split (never the test split)."""
    from models.metrics import change_scores

    stream = make_stream(data, data.val_split, cfg, model_cfg, augment=False,
                         max_pairs=cfg.val_max_pairs)
    collate = collate_for(tokenizer, model_cfg)
    losses = mean_loss(model, batches(stream, collate, cfg.pairs_per_batch), device)
    records = predict(model, batches(stream, collate, cfg.pairs_per_batch), tokenizer, device,
                      cfg.val_num_beams)
    scores = change_scores([r["prediction"] for r in records], [r["answer"] for r in records])
    metrics = {f"val_{k}": float(v) for k, v in losses.items()}
    metrics.update({f"val_{k}": float(v) for k, v in scores.items()})
    return metrics, records


def validation_summary(val: dict[str, float]) -> str:
    """The validation line people read: change-F1 with its parts, the loss and the parse rate
    (every metric goes to MLflow; the full list made a line of ~400 characters)."""
    def get(key: str) -> str:
        return f"{val[key]:.3f}" if key in val else "-"

    return (f"val_change_f1 {get('val_change_f1')} (precision {get('val_change_precision')}, "
            f"recall {get('val_change_recall')}: added {get('val_change_recall_added')}, "
            f"missing {get('val_change_recall_missing')}, level {get('val_change_recall_level')}), "
            f"loss {get('val_loss')}, parse rate {get('val_prediction_parse_rate')}")


def _better(value: float, best: float | None, mode: str) -> bool:
    return best is None or (value > best if mode == "max" else value < best)


def train(cfg: TrainConfig, model_cfg: dict, data: DataSpec, rt: Runtime) -> ckpt.TrainState:
    """Train from scratch or from rt.resume_dir; returns the final state."""
    from models.tokenizer import load_tokenizer

    seed_everything(cfg.seed, cfg.deterministic)
    tokenizer = load_tokenizer(data.tokenizer_dir)
    model = build_model(model_cfg, tokenizer)
    state = ckpt.TrainState()
    if rt.resume_dir is not None:
        ckpt.load_weights(rt.resume_dir, model)
        _, state = ckpt.read_config(rt.resume_dir)
    # channels_last: oneDNN's convolutions run without layout reorders (-8 % a step on CPU)
    model.to(rt.device, memory_format=torch.channels_last)
    step_module = rt.prepare_model(PairsForward(model))
    bare = ckpt.unwrap(step_module).model

    stream = make_stream(data, data.train_split, cfg, model_cfg, augment=True, rank=rt.rank,
                         world=rt.world_size)
    steps = rt.min_across_ranks(steps_per_epoch(len(stream), cfg.pairs_per_batch))
    if steps == 0:
        raise ValueError(f"rank {rt.rank}: no training pairs in {data.residuals_root} "
                         f"(split {data.train_split!r}, question types {cfg.question_types})")
    optimizer = optimizer_for(bare, cfg.lr, cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                  lr_lambda(cfg.warmup_steps, steps * cfg.epochs))
    if rt.resume_dir is not None:
        ckpt.load_optimizer(rt.resume_dir, optimizer, scheduler)
    collate = collate_for(tokenizer, model_cfg)
    autocast = autocast_dtype(cfg.bf16, rt.device)

    print_every = cfg.log_every * max(1, steps // 3 // max(cfg.log_every, 1))
    for epoch in range(state.epoch, cfg.epochs):
        stream.set_epoch(epoch)
        # Reseed per epoch (dropout RNG): a run resumed from epoch k's checkpoint then replays
        # exactly what the uninterrupted run did, not just "a" continuation.
        torch.manual_seed((cfg.seed * 1_000_003 + epoch) * 1_009 + rt.rank)
        step_module.train()
        t_last, q_last = time.perf_counter(), 0
        for batch in batches(stream, collate, cfg.pairs_per_batch, max_batches=steps):
            batch = batch.to(rt.device)
            losses = train_step(step_module, batch, optimizer, scheduler, cfg.grad_clip, autocast)
            state.step += 1
            q_last += batch.n_questions * rt.world_size
            state.samples += batch.n_questions * rt.world_size
            if state.step % cfg.log_every == 0 or state.step == 1:
                now = time.perf_counter()
                rt.tracker.log_metrics({
                    **{f"train/{k}": v for k, v in losses.items()},
                    "train/lr": scheduler.get_last_lr()[0],
                    "train/samples_per_s": q_last / max(now - t_last, 1e-9),
                    "train/epoch": epoch + 1}, state.step)
                if rt.rank == 0 and (state.step % print_every == 0 or state.step == 1):
                    # progress line, three per epoch (MLflow gets every log_every); Ray forwards
                    # worker stdout to the driver
                    print(f"[epoch {epoch + 1}/{cfg.epochs}] step {state.step}/{steps * cfg.epochs} "
                          f"loss {losses['loss']:.4f} (l_gen {losses['l_gen']:.4f}, "
                          f"l_con {losses['l_con']:.4f}, l_find {losses['l_find']:.4f})", flush=True)
                t_last, q_last = now, 0
        state.epoch = epoch + 1
        metrics = {"epoch": state.epoch, "step": state.step, "samples": state.samples}
        folder = None
        if rt.rank == 0:
            val, records = validate(bare, data, cfg, model_cfg, tokenizer, rt.device)
            metrics.update(val)
            rt.tracker.log_metrics(val, state.step)
            print(f"[epoch {state.epoch}/{cfg.epochs}] validation: {validation_summary(val)}", flush=True)
            rt.tracker.log_records(records[:50], f"val_predictions/epoch_{state.epoch:03d}.json")
            value = val.get(cfg.select_metric)
            if value is not None and _better(value, state.best_metric, cfg.select_mode):
                state.best_metric, state.best_epoch = value, state.epoch
            metrics.update({"best_metric": state.best_metric, "best_epoch": state.best_epoch})
            folder = Path(tempfile.mkdtemp(prefix="spotdiff-ckpt-"))
            ckpt.save(folder, bare, model_cfg, tokenizer, state, optimizer, scheduler)
        rt.report(metrics, folder)
    return state
