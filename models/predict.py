"""Generate answers for a stream of pair batches: the one prediction path shared by per-epoch
validation, the final test scoring and the ablations. Returns plain records (the JSONL that
`spotdiff evaluate --predictions` reads)."""

from __future__ import annotations

from typing import Iterable

import torch

from models.data import PairBatch


def decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


@torch.no_grad()
def predict(model, batches: Iterable[PairBatch], tokenizer, device: torch.device | str,
            num_beams: int = 1) -> list[dict]:
    """model: a bare ReAl (not DDP-wrapped). One image-encoder pass per pair, as in training.
    At most max_answer_len - 1 answer tokens: training answers are that long plus their eos."""
    max_new_tokens = model.cfg.max_answer_len - 1
    was_training = model.training
    model.eval()
    records: list[dict] = []
    for batch in batches:
        batch = batch.to(device)
        feats = model.encode_pairs(batch.main, batch.ref, batch.residual)
        outs = model.generate(feats, batch.pair_index, batch.question_ids, batch.question_mask,
                              max_new_tokens=max_new_tokens, num_beams=num_beams)
        for q, ids in enumerate(outs):
            records.append({
                "pair_id": batch.pair_ids[int(batch.pair_index[q])],
                "question": batch.questions[q],
                "answer": batch.answers[q],
                "prediction": decode(tokenizer, ids),
            })
    model.train(was_training)
    return records


@torch.no_grad()
def mean_loss(model, batches: Iterable[PairBatch], device: torch.device | str) -> dict[str, float]:
    """Teacher-forced losses averaged over questions: the cheap validation signal."""
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    n = 0
    for batch in batches:
        batch = batch.to(device)
        feats = model.encode_pairs(batch.main, batch.ref, batch.residual)
        out = model(feats, batch.pair_index, batch.question_ids, batch.question_mask,
                    batch.answer_ids, batch.answer_mask)
        q = batch.n_questions
        for k in ("loss", "l_gen", "l_con"):
            totals[k] = totals.get(k, 0.0) + float(out[k]) * q
        n += q
    model.train(was_training)
    return {k: v / max(n, 1) for k, v in totals.items()}
