"""Save and load a ReAl checkpoint as one self-describing folder:

    model.safetensors   weights (safetensors: loading never runs pickled code)
    optimizer.pt        optimizer + scheduler state, read back with torch.load(weights_only=True)
    config.json         {"model": ModelConfig.to_dict(), "state": {epoch, step, ...}, "special": ids}
    tokenizer/          the transformers tokenizer the ids were made with

The folder is what Ray Train reports (ray.train.Checkpoint.from_directory) and what MLflow logs,
so a checkpoint found anywhere can rebuild the model without the run's params.yaml."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

WEIGHTS, OPTIM, CONFIG, TOKENIZER = "model.safetensors", "optimizer.pt", "config.json", "tokenizer"


@dataclass
class TrainState:
    epoch: int = 0           # epochs completed
    step: int = 0            # optimizer steps completed (global, survives resume)
    samples: int = 0         # questions seen (all ranks)
    best_metric: float | None = None
    best_epoch: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare module under DDP (Ray's prepare_model wraps it)."""
    return model.module if hasattr(model, "module") else model


def save(folder: str | Path, model: torch.nn.Module, model_cfg: dict, tokenizer, state: TrainState,
         optimizer: torch.optim.Optimizer | None = None, scheduler=None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # save_model (not save_file) dedups tied tensors: GPT-2's lm_head shares wte. Training keeps
    # conv weights channels_last; the file stores them contiguous, as any loader expects.
    save_model(unwrap(model), str(folder / WEIGHTS), force_contiguous=True)
    if optimizer is not None:
        torch.save({"optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None},
                   folder / OPTIM)
    (folder / CONFIG).write_text(json.dumps({"model": model_cfg, "state": state.__dict__},
                                            indent=2, sort_keys=True))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder / TOKENIZER))
    return folder


def copy_for_inference(src: str | Path, dst: str | Path) -> Path:
    """Weights, config and tokenizer: what answering needs. The optimizer state stays behind —
    it is a torch pickle, and a model folder spotdiff loads holds no pickle (models/model_folder.py)."""
    import shutil

    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / WEIGHTS, dst / WEIGHTS)
    shutil.copy2(src / CONFIG, dst / CONFIG)
    shutil.copytree(src / TOKENIZER, dst / TOKENIZER, dirs_exist_ok=True)
    return dst


def read_config(folder: str | Path) -> tuple[dict, TrainState]:
    raw = json.loads((Path(folder) / CONFIG).read_text())
    return raw["model"], TrainState(**raw["state"])


def load_weights(folder: str | Path, model: torch.nn.Module) -> None:
    missing, unexpected = load_model(unwrap(model), str(Path(folder) / WEIGHTS), strict=True)
    if unexpected:
        raise ValueError(f"{folder}: unexpected weights {unexpected[:5]}")


def load_optimizer(folder: str | Path, optimizer: torch.optim.Optimizer, scheduler=None) -> bool:
    path = Path(folder) / OPTIM
    if not path.exists():
        return False
    blob = torch.load(path, weights_only=True, map_location="cpu")
    optimizer.load_state_dict(blob["optimizer"])
    if scheduler is not None and blob["scheduler"] is not None:
        scheduler.load_state_dict(blob["scheduler"])
    return True


def load_model_from(folder: str | Path, device: str | torch.device = "cpu"):
    """(model, tokenizer, state) from a checkpoint folder, model in eval mode."""
    from models.config import ModelConfig
    from models.model import ReAl
    from models.vocabulary import vocabulary_ids
    from models.tokenizer import load_tokenizer

    model_cfg, state = read_config(folder)
    tokenizer = load_tokenizer(Path(folder) / TOKENIZER)
    # initial weights are overwritten by the checkpoint's: do not look for them on this machine
    model_cfg = {**model_cfg, "pretrained_resnet": None, "pretrained_gpt2": None}
    model = ReAl(ModelConfig.from_dict(model_cfg), pad_token_id=tokenizer.pad_token_id,
                 bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                **vocabulary_ids(tokenizer))
    load_weights(folder, model)
    return model.to(device).eval(), tokenizer, state
