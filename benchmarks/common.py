"""Shared by the benchmarks: the model under test (params.yaml `model` of a profile, or a small
CPU config) and a synthetic batch of whole pairs. Synthetic so the numbers need no dataset and
every variant sees byte-identical inputs."""

from __future__ import annotations

import resource
import time

import torch

from models.data import PairBatch

# Small enough for a 2-core CPU, big enough that the step is not pure Python overhead.
CPU_MODEL = dict(backbone="resnet18", image_size=128, n_queries=8, proj_layers=1, n_embd=128,
                 n_layer=2, n_head=4, vocab_size=512, max_question_len=24, max_answer_len=48,
                 use_residual=True, use_rfa=True, residual_kind="naive", rfa_weight=1.0,
                 dropout=0.0)
PAD, BOS, EOS = 0, 1, 2


def model_config(profile: str | None) -> dict:
    if profile is None:
        return dict(CPU_MODEL)
    from assets.params import load_params

    return dict(load_params(profile=profile)["model"])


def build(cfg: dict) -> torch.nn.Module:
    from models.config import ModelConfig
    from models.model import ReAl

    return ReAl(ModelConfig.from_dict(cfg), pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS)


def synthetic_batch(cfg: dict, pairs: int, questions_per_pair: int, seed: int = 0,
                    grouped: bool = True) -> PairBatch:
    """pairs x questions_per_pair questions. grouped=False repeats each pair's images once per
    question (what a per-question pipeline feeds the encoders)."""
    g = torch.Generator().manual_seed(seed)
    S = int(cfg["image_size"])
    imgs = [torch.rand(pairs, 1, S, S, generator=g) for _ in range(2)]
    Q = pairs * questions_per_pair
    q_ids = torch.randint(3, int(cfg["vocab_size"]), (Q, 12), generator=g)
    a_ids = torch.randint(3, int(cfg["vocab_size"]), (Q, 24), generator=g)
    a_ids[:, -1] = EOS
    pair_index = torch.arange(pairs).repeat_interleave(questions_per_pair)
    main, ref = imgs
    if not grouped:
        main, ref, pair_index = main[pair_index], ref[pair_index], torch.arange(Q)
    return PairBatch(pair_ids=[str(i) for i in range(len(main))], main=main, ref=ref,
                     residual=main - ref, pair_index=pair_index, question_ids=q_ids,
                     question_mask=torch.ones_like(q_ids), answer_ids=a_ids,
                     answer_mask=torch.ones_like(a_ids), questions=[""] * Q, answers=[""] * Q)


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_steps(step_module, batch, steps: int, warmup: int, between=None) -> dict[str, list[float]]:
    """Wall and process-CPU seconds per optimizer step (after warmup); `between(i)` runs after
    each timed step (Ray's per-step report in the Ray variant). CPU seconds are what a step costs
    on idle cores; wall seconds also carry whatever else the machine is doing."""
    from models.train_loop import lr_lambda, train_step

    opt = torch.optim.AdamW(step_module.parameters(), lr=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(0, steps + warmup))
    out: dict[str, list[float]] = {"wall": [], "cpu": [], "hook": []}
    for i in range(warmup + steps):
        t0, c0 = time.perf_counter(), time.process_time()
        train_step(step_module, batch, opt, sched, 1.0, None)
        if between is not None and i >= warmup:
            h0 = time.perf_counter()
            between(i)
            out["hook"].append(time.perf_counter() - h0)
        if i >= warmup:
            out["wall"].append(time.perf_counter() - t0)
            out["cpu"].append(time.process_time() - c0)
    return out


def merge(*runs: dict[str, list[float]]) -> dict[str, list[float]]:
    return {k: [v for r in runs for v in r[k]] for k in ("wall", "cpu", "hook")}


def medians(t: dict[str, list[float]]) -> dict[str, float]:
    import statistics

    return {f"{k}_s_median": statistics.median(v) for k, v in t.items() if v}


def emit(result: dict, out=None) -> None:
    """Print the result as JSON and, when asked, keep it in a file (docs/benchmarks.md quotes it)."""
    import json

    text = json.dumps(result, indent=2)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
