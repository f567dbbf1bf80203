"""The GPU side in one short run, for a machine with a CUDA card: what the card is; the product's
training loop on it (models.train_loop.train under an nccl process group and DDP, as a Ray Train
worker with use_gpu runs it, bf16 autocast, validation with generation), twice with one seed to
see whether the losses repeat; and the step throughput of the default and the paper-sized model
in fp32 and under bf16 autocast, with peak GPU memory.

    python -m benchmarks.gpu_check --data-root data [--out FILE] [--budget-s 360]

--data-root holds prepared/ and residuals/ of any profile (the smoke data is enough: the loop is
what is checked, not the model's quality). Without a GPU it runs on the CPU at tiny sizes: a
check of the script, not a measurement. Every section writes its result even when another fails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import traceback
from pathlib import Path

import pipelines.env  # noqa: F401  (telemetry off first)

import torch

from benchmarks.common import build, emit, model_config, synthetic_batch

# docs/model.md "Parameter counts": the paper's sizes (ResNet-50 at 512 px, GPT-2 small)
PAPER = dict(backbone="resnet50", image_size=512, n_embd=768, n_layer=12, n_head=12, n_queries=32,
             proj_layers=1)


def facts(device: torch.device) -> dict:
    out = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": str(device)}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        out.update(name=p.name, capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2**30, 1),
                   multiprocessors=p.multi_processor_count, nccl=".".join(map(str, torch.cuda.nccl.version())),
                   bf16_supported=torch.cuda.is_bf16_supported())
    return out


def training_loop(data_root: Path, device: torch.device, model_profile: str, epochs: int) -> dict:
    """Two runs of the product's loop with one seed: losses, validation, wall time each."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from assets.params import load_params
    from models.train import all_reduce_min, train_tokenizer_files, write_files
    from models.train_loop import DataSpec, Runtime, TrainConfig, train

    cuda = device.type == "cuda"
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29531")
    # nccl as Ray Train's TorchConfig(backend="nccl") sets it up for use_gpu; world of one here
    dist.init_process_group("nccl" if cuda else "gloo", rank=0, world_size=1,
                            device_id=device if cuda else None)
    params = load_params(profile="smoke")
    model_cfg = dict(model_config(model_profile))
    prepared, residuals = data_root / "prepared", data_root / "residuals"
    t = params["train"]
    cfg = TrainConfig(epochs=epochs, pairs_per_batch=t["pairs_per_batch"], warmup_steps=t["warmup_steps"],
                      log_every=1, val_max_pairs=t["val_max_pairs"], seed=0, deterministic=True,
                      bf16=True, swap_prob=0.5)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    tok_dir = write_files(train_tokenizer_files(str(prepared / "pairs.parquet"), int(model_cfg["vocab_size"]),
                                                cfg.question_types), work / "tokenizer")
    from models.tokenizer import load_tokenizer
    model_cfg["vocab_size"] = len(load_tokenizer(tok_dir))
    data = DataSpec(str(residuals), str(prepared / "pairs.parquet"), str(tok_dir),
                    targets_parquet=str(prepared / "finding_targets.parquet"))
    runs = []
    for attempt in range(2):
        log: list[dict] = []

        class Tracker:
            def log_metrics(self, metrics, step):
                log.append({"step": step, **metrics})

            def log_records(self, records, name):
                pass

        rt = Runtime(device=device, tracker=Tracker(), min_across_ranks=all_reduce_min,
                     prepare_model=lambda m: DDP(m, device_ids=[device.index] if cuda else None))
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        state = train(cfg, model_cfg, data, rt)
        if cuda:
            torch.cuda.synchronize()
        losses = [round(r["train/loss"], 6) for r in log if "train/loss" in r]
        val = [{k: round(v, 4) for k, v in r.items() if k.startswith("val_")} for r in log
               if any(k.startswith("val_") for k in r)]
        runs.append({"wall_s": round(time.perf_counter() - t0, 1), "steps": state.step,
                     "losses": losses, "validation": val})
    dist.destroy_process_group()
    return {"backend": "nccl" if cuda else "gloo", "model": model_profile, "epochs": epochs,
            "runs": runs, "same_losses": runs[0]["losses"] == runs[1]["losses"],
            "max_loss_diff": max((abs(a - b) for a, b in zip(runs[0]["losses"], runs[1]["losses"])), default=0.0)}


def step_throughput(cfg: dict, pairs: int, questions: int, bf16: bool, device: torch.device,
                    steps: int, warmup: int) -> dict:
    from models.train_loop import PairsForward, optimizer_for, train_step

    torch.manual_seed(0)
    model = build(cfg).to(device, memory_format=torch.channels_last)
    step = PairsForward(model).train()
    opt = optimizer_for(step, 3e-4, 0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    batch = synthetic_batch(cfg, pairs, questions).to(device)
    dtype = torch.bfloat16 if bf16 else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        train_step(step, batch, opt, sched, 1.0, dtype)  # returns floats: synchronises
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    row = {"pairs": pairs, "questions": pairs * questions, "precision": "bf16 autocast" if bf16 else "fp32",
           "step_s_median": round(med, 4), "pairs_per_s": round(pairs / med, 1),
           "questions_per_s": round(pairs * questions / med, 1),
           "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}
    if device.type == "cuda":
        row["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    del model, step, opt, batch
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=Path("data"))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--budget-s", type=float, default=360, help="throughput rows stop past this")
    args = ap.parse_args()
    t_start = time.perf_counter()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    result: dict = {"benchmark": "gpu_check", "date": time.strftime("%Y-%m-%d"), "facts": facts(device)}

    def section(name, fn):
        t0 = time.perf_counter()
        try:
            result[name] = fn()
        except Exception as e:  # one broken section must not lose the others' figures
            result[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
        print(f"[{name}] {time.perf_counter() - t0:.1f} s", flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2) + "\n")

    section("training_loop", lambda: training_loop(args.data_root, device, "default" if cuda else "smoke",
                                                   epochs=2))
    default = model_config("default")
    grid = ([(default, "default", p, b) for p in (8, 32, 128) for b in (False, True)]
            + [({**default, **PAPER}, "paper", p, b) for p in (8, 32) for b in (False, True)]
            if cuda else [(model_config("smoke"), "smoke", 2, False)])
    rows = []

    def throughput():
        for cfg, name, pairs, bf16 in grid:
            if time.perf_counter() - t_start > args.budget_s:
                rows.append({"model": name, "pairs": pairs, "skipped": "past --budget-s"})
                continue
            try:
                rows.append({"model": name, **step_throughput(cfg, pairs, 2, bf16, device,
                                                              steps=10 if cuda else 2, warmup=3 if cuda else 1)})
            except torch.OutOfMemoryError as e:
                rows.append({"model": name, "pairs": pairs, "bf16": bf16, "error": f"out of memory: {e}"[:300]})
                torch.cuda.empty_cache()
            print(json.dumps(rows[-1]), flush=True)
        return rows

    section("throughput", throughput)
    emit(result, args.out)


if __name__ == "__main__":
    main()
