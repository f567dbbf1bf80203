"""One trained checkpoint, its difference questions answered three ways: free decoding, decoding
in the answer grammar, and decoding held to the change set its finding heads predict
(`decode_with_heads`). Says how much of the answer's quality the decoder carries and how much
the heads do; with --oracle, also what the decoder says when its finding tokens carry the true
states (does it read them?).

    python -m benchmarks.decoding_modes [--checkpoint runs/model/best] [--split test] [--max-pairs N]
        [--oracle] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import pipelines.env  # noqa: F401  (telemetry off first)

import torch
import yaml

from benchmarks.common import emit

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    from models import checkpoint as ckpt
    from models.data import batches
    from models.metrics import change_scores
    from models.predict import decode, grammar_processor, predict
    from models.train_loop import DataSpec, TrainConfig, collate_for, make_stream

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, default=REPO / "runs/model/best")
    ap.add_argument("--split", default="test")
    ap.add_argument("--max-pairs", type=int)
    ap.add_argument("--oracle", action="store_true")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    d = params["data"]
    model, tok, _ = ckpt.load_model_from(args.checkpoint)
    mc = model.cfg.to_dict()
    data = DataSpec(str(REPO / d["residuals_root"]), str(REPO / d["prepared_root"] / "pairs.parquet"), "",
                    targets_parquet=str(REPO / d["prepared_root"] / "finding_targets.parquet"))
    cfg = TrainConfig(question_types=("difference",), crop_scale=float(params["train"]["crop_scale"]))
    stream = make_stream(data, args.split, cfg, {**mc, "finding_heads": True}, augment=False,
                         max_pairs=args.max_pairs)
    collate = collate_for(tok, mc)
    result: dict = {"benchmark": "decoding_modes", "date": time.strftime("%Y-%m-%d"),
                    "checkpoint": str(args.checkpoint), "split": args.split}
    modes = [("free", False, False), ("grammar", True, False)]
    if model.finding_heads is not None:
        modes.append(("grammar+heads", True, True))
    for name, constrained, heads in modes:
        model.cfg = dataclasses.replace(model.cfg, decode_with_heads=heads)
        t0 = time.perf_counter()
        recs = predict(model, batches(stream, collate, 8), tok, "cpu", constrained=constrained)
        scores = change_scores([r["prediction"] for r in recs], [r["answer"] for r in recs])
        result[name] = {"questions": len(recs), "seconds": round(time.perf_counter() - t0, 1),
                        **{k: round(v, 4) for k, v in scores.items()}}
    if args.oracle and model.finding_heads is not None:
        model.cfg = dataclasses.replace(model.cfg, decode_with_heads=False)
        preds, golds = [], []
        with torch.no_grad():
            for b in batches(stream, collate, 8):
                f = model.encode_pairs(b.main, b.ref, b.residual)
                every = torch.ones(len(b.pair_ids), dtype=torch.bool)
                f.finding_tokens = model.finding_heads.tokens(f.findings, b.finding_targets, every,
                                                              wte=model.gpt.transformer.wte)
                outs = model.generate(f, b.pair_index, b.question_ids, b.question_mask,
                                      model.cfg.max_answer_len - 1, logits_processor=grammar_processor(
                                          tok, b.question_types, 1, model.cfg.max_answer_len - 1))
                preds += [decode(tok, o) for o in outs]
                golds += b.answers
        result["grammar, oracle tokens"] = {k: round(v, 4) for k, v in change_scores(preds, golds).items()}
    emit(result, args.out)


if __name__ == "__main__":
    main()
