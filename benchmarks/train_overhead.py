"""What Ray Train costs per step: the same model and the same batch, timed in one run as
(a) a plain PyTorch loop in this process and (b) inside a Ray Train V2 TorchTrainer worker
(prepare_model + a ray.train.report every step, which is more often than training reports),
where the worker also interleaves blocks of plain steps so a busy machine biases neither side;
then 2 workers vs 1 on CPU (gloo DDP), and peak memory of each.

    python -m benchmarks.train_overhead [--steps 20] [--profile default] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pipelines.env  # noqa: F401  (telemetry off first)

import torch

from benchmarks.common import (build, emit, medians, merge, model_config, peak_rss_mb, synthetic_batch,
                               timed_steps)

REPO = str(Path(__file__).resolve().parents[1])


def plain(cfg: dict, args) -> dict:
    from models.train_loop import PairsForward

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    step = PairsForward(build(cfg))
    batch = synthetic_batch(cfg, args.pairs, args.questions)
    return {**medians(timed_steps(step, batch, args.steps, args.warmup)),
            "peak_rss_mb": peak_rss_mb()}


def _ray_worker(config: dict) -> None:
    """Times, in this worker, blocks of plain steps (the bare module, no reporting) interleaved
    with blocks of Ray steps (the prepare_model'd module + ray.train.report each step), so both
    see the same process, threads and machine load."""
    import ray.train
    import ray.train.torch

    from models.train_loop import PairsForward

    torch.manual_seed(0)
    torch.set_num_threads(config["threads"])
    cfg = config["model"]
    bare = PairsForward(build(cfg))
    prepared = ray.train.torch.prepare_model(bare)
    batch = synthetic_batch(cfg, config["pairs"], config["questions"])
    ctx = ray.train.get_context()
    plain_t, ray_t = [], []
    block = max(1, config["steps"] // config["rounds"])
    single = ctx.get_world_size() == 1  # a bare step under DDP would desync the ranks
    timed_steps(prepared, batch, 0, config["warmup"])
    for r in range(config["rounds"]):
        # alternate which side goes first, so a drifting machine load cancels out
        if single and r % 2:
            plain_t.append(timed_steps(bare, batch, block, 0))
        ray_t.append(timed_steps(prepared, batch, block, 0,
                                 between=lambda i: ray.train.report({"i": i})))
        if single and not r % 2:
            plain_t.append(timed_steps(bare, batch, block, 0))
    # Ray Train V2 keeps only metrics reported with a checkpoint; a file is simpler here.
    Path(config["out"]).with_suffix(f".rank{ctx.get_world_rank()}.json").write_text(json.dumps({
        "ray": medians(merge(*ray_t)), "plain_in_worker": medians(merge(*plain_t)) if plain_t else None,
        "peak_rss_mb": peak_rss_mb(), "world": ctx.get_world_size()}))


def on_ray(cfg: dict, args, workers: int, threads: int) -> dict:
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    t0 = time.perf_counter()
    out = Path(args.storage) / f"bench-{workers}w-{int(time.time())}"
    out.parent.mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        _ray_worker,
        train_loop_config={"model": cfg, "pairs": args.pairs, "questions": args.questions,
                           "steps": args.steps, "warmup": args.warmup, "threads": threads,
                           "rounds": args.rounds,
                           "out": str(out)},
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=workers,
                                               resources_per_worker={"CPU": threads}),
        run_config=ray.train.RunConfig(name=out.name, storage_path=args.storage))
    trainer.fit()
    ranks = [json.loads(out.with_suffix(f".rank{r}.json").read_text()) for r in range(workers)]
    # the slowest rank sets the pace of synchronous DDP
    m = max(ranks, key=lambda r: r["ray"]["wall_s_median"])
    m["peak_rss_mb_per_worker"] = [r["peak_rss_mb"] for r in ranks]
    m["fit_wall_s"] = time.perf_counter() - t0
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=None, help="params.yaml profile's `model` (default: a small CPU config)")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=4, help="interleaved plain/Ray blocks")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--questions", type=int, default=2, help="questions per pair")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--storage", default=str(Path(REPO) / "runs" / "bench"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import ray

    cfg = model_config(args.profile)
    res: dict = {"model": cfg, "args": {k: v for k, v in vars(args).items() if k != "out"},
                 "cpu_count": os.cpu_count(), "torch": torch.__version__}
    res["plain"] = plain(cfg, args)
    ray.init(num_cpus=args.threads, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": REPO}})
    res["ray_1w"] = on_ray(cfg, args, 1, args.threads)
    r1 = res["ray_1w"]
    for k in ("wall", "cpu"):
        key = f"{k}_s_median"
        res[f"overhead_pct_{k}_vs_plain_process"] = 100 * (r1["ray"][key] / res["plain"][key] - 1)
        res[f"overhead_pct_{k}_interleaved"] = 100 * (r1["ray"][key] / r1["plain_in_worker"][key] - 1)
    # The direct measure: time inside ray.train.report per step, against the step's wall time.
    # Robust to machine load, which moves whole steps by far more than Ray's share.
    res["report_ms_median"] = 1000 * r1["ray"]["hook_s_median"]
    res["report_pct_of_step"] = 100 * r1["ray"]["hook_s_median"] / r1["ray"]["wall_s_median"]
    res["load_average"] = os.getloadavg()
    if args.threads >= 2:
        res["ray_2w"] = on_ray(cfg, args, 2, args.threads // 2)
        q = args.pairs * args.questions
        res["throughput_q_per_s"] = {
            "1 worker x %d threads" % args.threads: q / res["ray_1w"]["ray"]["wall_s_median"],
            "2 workers x %d threads" % (args.threads // 2): 2 * q / res["ray_2w"]["ray"]["wall_s_median"]}
    ray.shutdown()
    emit(res, args.out)


if __name__ == "__main__":
    main()
