"""What each CPU setting of the training step buys: the default profile's model on a synthetic
batch, one process, timed with the settings switched on one after another — fp32 with plain
AdamW (the step before these settings), fused AdamW, bf16 autocast (only where oneDNN has native
bf16), channels_last convolutions, deterministic mode without NaN-filling new tensors. Blocks of
steps of every setting are interleaved, so a drifting machine load biases none of them.

    python -m benchmarks.step_speed [--pairs 8] [--questions 2] [--threads 1] [--steps 6] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import pipelines.env  # noqa: F401  (telemetry off first)

import torch
import torch.utils.deterministic

from benchmarks.common import build, emit, model_config, synthetic_batch

# cumulative: each setting keeps the ones before it
SETTINGS = ("fp32, AdamW", "+ fused AdamW", "+ bf16 autocast", "+ channels_last", "+ no NaN fill")


def make_step(cfg: dict, level: int, threads: int):
    """A step function for the first `level` + 1 settings, with its own model and optimizer."""
    from models.train_loop import PairsForward, autocast_dtype, optimizer_for, train_step

    torch.manual_seed(0)
    model = build(cfg)
    if level >= 3:
        model = model.to(memory_format=torch.channels_last)
    step = PairsForward(model).train()
    opt = (optimizer_for(step, 3e-4, 0.01) if level >= 1
           else torch.optim.AdamW(step.parameters(), lr=3e-4, weight_decay=0.01))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    dtype = autocast_dtype(True, torch.device("cpu")) if level >= 2 else None

    def run(batch) -> float:
        torch.set_num_threads(threads)
        torch.utils.deterministic.fill_uninitialized_memory = level < 4
        t0 = time.perf_counter()
        train_step(step, batch, opt, sched, 1.0, dtype)
        return time.perf_counter() - t0

    return run, dtype


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--pairs", type=int, default=8, help="pairs per step (one worker's batch)")
    ap.add_argument("--questions", type=int, default=2, help="questions per pair")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a Ray worker has 1)")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per setting")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    torch.use_deterministic_algorithms(True, warn_only=True)  # as training runs (train.deterministic)
    cfg = model_config(args.profile)
    batch = synthetic_batch(cfg, args.pairs, args.questions)
    steps = [make_step(cfg, level, args.threads) for level in range(len(SETTINGS))]
    for run, _ in steps:  # warm-up: oneDNN picks and caches its kernels on the first calls
        run(batch), run(batch)
    times: list[list[float]] = [[] for _ in steps]
    block = max(1, args.steps // args.rounds)
    for r in range(args.rounds):
        order = range(len(steps)) if r % 2 == 0 else reversed(range(len(steps)))
        for level in order:
            times[level] += [steps[level][0](batch) for _ in range(block)]
    base = statistics.median(times[0])
    rows = {}
    for name, (run, dtype), t in zip(SETTINGS, steps, times):
        med = statistics.median(t)
        rows[name] = {"step_s_median": round(med, 3), "speedup": round(base / med, 2),
                      "questions_per_s": round(args.pairs * args.questions / med, 2),
                      "autocast": str(dtype) if dtype else None}
    emit({"benchmark": "step_speed", "date": time.strftime("%Y-%m-%d"), "cpu": _cpu_name(),
          "native_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
          "threads": args.threads, "pairs": args.pairs, "questions_per_pair": args.questions,
          "load_average": os.getloadavg(), "settings": rows}, args.out)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
