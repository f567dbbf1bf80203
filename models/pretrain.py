"""Encoder pretraining on single images: before ReAl sees a pair, its image encoder learns which
of the 30 findings an image shows and at which level (seed 000's location-aware pretraining,
adapted to the labels this data has: the per-study finding states the single-image and
difference questions determine, assets/finding_states.py).

Each training pair gives two images, main and reference, each with its own presence/level
targets; the augmentation is the pair's (models/augment.py). The result is the encoder's
state_dict in the layout `model.pretrained_resnet` loads (a torchvision ResNet's, 1-channel stem;
the tiny backbone's own) — ReAl initialises E_I and E_R from it. Plain PyTorch in one process:
the stage is small next to ReAl training, and Ray adds nothing for one worker.

    python -m models.pretrain  (or `spotdiff pretrain`, the DVC stage `pretrain`, the Dagster
    asset `pretrained_encoder`: all call `pretrain`)"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn as nn

from assets.finding_states import N_FINDINGS, N_LEVELS
from models.data import batches, seed_everything
from models.encoders import ImageEncoder
from models.finding_heads import MAIN_LEVEL, MAIN_PRESENCE, REF_LEVEL, REF_PRESENCE, state_loss

ENCODER_FILE, REPORT_FILE = "encoder.pth", "pretrain.json"


@dataclass(frozen=True)
class PretrainConfig:
    epochs: int = 2
    pairs_per_batch: int = 16   # each pair gives two images
    lr: float = 1.0e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    seed: int = 0
    deterministic: bool = True


class EncoderPretrainer(nn.Module):
    """E_I with presence and level heads on its pooled map (the finding heads' single-image half)."""

    def __init__(self, backbone: str):
        super().__init__()
        self.encoder = ImageEncoder(backbone, centered=False)
        c = self.encoder.out_channels
        self.presence = nn.Linear(c, N_FINDINGS)
        self.level = nn.Linear(c, N_FINDINGS * N_LEVELS)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.encoder(images).mean(dim=(2, 3))
        return self.presence(pooled), self.level(pooled).view(-1, N_FINDINGS, N_LEVELS)

    def backbone_state(self) -> dict:
        """The state_dict `ImageEncoder(..., pretrained=path)` loads (torchvision names for ResNets)."""
        b = self.encoder.backbone
        return (b.net if hasattr(b, "net") else b).state_dict()


def single_images(pair_batches: Iterator) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(images (2P, 1, S, S), presence targets (2P, F), level targets (2P, F)) per pair batch."""
    for b in pair_batches:
        t = b.finding_targets
        yield (torch.cat([b.main, b.ref]), torch.cat([t[:, MAIN_PRESENCE], t[:, REF_PRESENCE]]),
               torch.cat([t[:, MAIN_LEVEL], t[:, REF_LEVEL]]))


@torch.no_grad()
def presence_scores(model: EncoderPretrainer, stream_batches: Iterator) -> dict[str, float]:
    """Presence F1 and accuracy over the determined cells (validation images)."""
    model.eval()
    tp = fp = fn = right = n = 0
    for images, pres, _ in single_images(stream_batches):
        pred = model(images)[0] > 0
        known = pres >= 0
        gold = pres == 1
        tp += int((pred & gold & known).sum())
        fp += int((pred & ~gold & known).sum())
        fn += int((~pred & gold & known).sum())
        right += int(((pred == gold) & known).sum())
        n += int(known.sum())
    model.train()
    return {"presence_f1": 2 * tp / max(1, 2 * tp + fp + fn), "presence_accuracy": right / max(1, n)}


def pretrain(cfg: PretrainConfig, backbone: str, train_batches: Callable[[int], Iterator],
             val_batches: Callable[[], Iterator], steps_per_epoch: int, out_dir: Path,
             log: Callable[[dict, int], None] = lambda m, s: None,
             progress: Callable[[int], None] = lambda n: None) -> dict:
    """Train, write out_dir/encoder.pth and out_dir/pretrain.json; returns the report.
    train_batches(epoch) / val_batches() yield PairBatch (models/data.py) with finding targets."""
    seed_everything(cfg.seed, cfg.deterministic)
    model = EncoderPretrainer(backbone)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = max(1, steps_per_epoch * cfg.epochs)
    warm = min(cfg.warmup_steps, total - 1)
    # torch's own schedules: linear warm-up, then cosine to 10 % of the peak
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [
        torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0 / max(1, warm), total_iters=max(1, warm)),
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total - warm), eta_min=cfg.lr * 0.1),
    ], milestones=[max(1, warm)])
    step, t0, report = 0, time.perf_counter(), {}
    for epoch in range(cfg.epochs):
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)
        for images, pres, lvl in single_images(batches_limit(train_batches(epoch), steps_per_epoch)):
            presence, level = model(images)
            loss = state_loss(presence, level, pres, lvl)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            progress(1)
            if step % 10 == 0 or step == 1:
                log({"pretrain/loss": float(loss.detach()), "pretrain/lr": sched.get_last_lr()[0]}, step)
        scores = presence_scores(model, val_batches())
        log({f"pretrain/val_{k}": v for k, v in scores.items()}, step)
        report = {"epoch": epoch + 1, "steps": step, **{f"val_{k}": v for k, v in scores.items()}}
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.backbone_state(), out_dir / ENCODER_FILE)
    report.update({"backbone": backbone, "config": asdict(cfg), "wall_s": round(time.perf_counter() - t0, 1),
                   "encoder": ENCODER_FILE})
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


def batches_limit(it: Iterator, n: int) -> Iterator:
    for i, b in enumerate(it):
        if i >= n:
            return
        yield b


def data_batches(data, split: str, train_cfg, model_cfg: dict, pairs_per_batch: int,
                 augment: bool) -> tuple[Callable[[int], Iterator], int]:
    """(epoch -> PairBatch iterator over `split`, pairs in it), from the residual shards and the
    finding targets. train_cfg (a TrainConfig) gives the augmentation, seed and shuffling; its
    question types only select pairs (the images matter here, not the questions)."""
    from models.data import make_collate
    from models.train_loop import make_stream

    stream = make_stream(data, split, train_cfg, {**model_cfg, "finding_heads": True}, augment=augment)
    # no text is needed: a collate that tokenizes nothing
    collate = make_collate(lambda text: [], 0, 1, 1)

    def epoch_batches(epoch: int) -> Iterator:
        stream.set_epoch(epoch)
        return batches(stream, collate, pairs_per_batch)

    return epoch_batches, len(stream)
