"""The saving of grouping questions by pair: one training step over the same questions, either
grouped (each pair's images encoded once, questions index into it) or per question (the images
repeated once per question, as a per-question loader would feed them). Interleaved repeats, so
machine load biases neither side. Also reports the questions-per-pair distribution of the
prepared data when pairs.parquet exists.

    python -m benchmarks.pair_grouping [--questions 1 2 4 7] [--pairs-parquet data/prepared/pairs.parquet]
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path

import pipelines.env  # noqa: F401

import torch

from benchmarks.common import build, emit, medians, merge, model_config, peak_rss_mb, synthetic_batch, timed_steps


def questions_per_pair(pairs_parquet: Path, question_types: list[str] | None) -> dict:
    import pyarrow.parquet as pq

    t = pq.read_table(pairs_parquet, columns=["pair_id", "question_type", "split"]).to_pylist()
    keep = [r for r in t if r["split"] == "train"
            and (not question_types or "all" in question_types or r["question_type"] in question_types)]
    per = Counter(r["pair_id"] for r in keep)
    hist = Counter(per.values())
    return {"pairs": len(per), "questions": len(keep),
            "mean": (len(keep) / len(per)) if per else 0.0,
            "histogram": {str(k): v for k, v in sorted(hist.items())}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=None)
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--questions", type=int, nargs="+", default=[1, 2, 4, 7])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs-parquet", type=Path, default=Path("data/prepared/pairs.parquet"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from models.train_loop import PairsForward

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = model_config(args.profile)
    step = PairsForward(build(cfg))
    res: dict = {"model": cfg, "pairs_per_batch": args.pairs, "load_average_start": os.getloadavg(),
                 "rows": []}
    for k in args.questions:
        grouped = synthetic_batch(cfg, args.pairs, k, grouped=True)
        flat = synthetic_batch(cfg, args.pairs, k, grouped=False)
        timed_steps(step, grouped, 0, 2)  # warm both shapes (allocator, kernel caches)
        timed_steps(step, flat, 0, 2)
        g, f = [], []
        for _ in range(args.rounds):
            g.append(timed_steps(step, grouped, args.steps, 0))
            f.append(timed_steps(step, flat, args.steps, 0))
        g, f = medians(merge(*g)), medians(merge(*f))
        row = {"questions_per_pair": k, "questions": args.pairs * k,
               "grouped": g, "per_question": f,
               "image_passes_grouped": args.pairs, "image_passes_per_question": args.pairs * k,
               "speedup_wall": f["wall_s_median"] / g["wall_s_median"],
               "speedup_cpu": f["cpu_s_median"] / g["cpu_s_median"]}
        res["rows"].append(row)
        print(json.dumps(row), flush=True)
    res["peak_rss_mb"] = peak_rss_mb()
    if args.pairs_parquet.exists():
        from assets.params import load_params

        qt = load_params(profile=args.profile)["pairs"]["question_types"]
        res["data"] = questions_per_pair(args.pairs_parquet, qt)
    emit(res, args.out)


if __name__ == "__main__":
    main()
