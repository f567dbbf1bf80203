"""Generate answers for a stream of pair batches: the one prediction path shared by per-epoch
validation, the final test scoring and the ablations. Returns plain records (the JSONL that
`spotdiff evaluate --predictions` reads)."""

from __future__ import annotations

from typing import Iterable

import torch

from models.data import PairBatch

LOSS_KEYS = ("loss", "l_gen", "l_con", "l_find", "l_align")


def decode(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def grammar_processor(tokenizer, question_types: list[str], num_beams: int = 1,
                      max_new_tokens: int | None = None, patterns: list | None = None):
    """Keeps each answer (each beam) in its question type's grammar, or in its own pattern when
    `patterns` are given (models/constrained.py)."""
    from models.constrained import GrammarLogitsProcessor

    rows = [t for t in question_types for _ in range(num_beams)]
    per_row = [p for p in patterns for _ in range(num_beams)] if patterns is not None else None
    # head-guided patterns are small and exact: check the budget from the first token
    zones = [max_new_tokens] * len(per_row) if per_row is not None and max_new_tokens else None
    return GrammarLogitsProcessor(tokenizer, rows, keep=num_beams, max_new_tokens=max_new_tokens,
                                  patterns=per_row, closing_zones=zones)


def head_patterns(model, feats, pair_index, questions: list[str], types: list[str], tokenizer=None,
                  max_new_tokens: int | None = None) -> list | None:
    """With `decode_with_heads`: each difference question may state exactly the change set the
    model's finding heads predict for its pair (the decoder orders and words it); a single-image
    question exactly the heads' answer about the main image (finding_heads.single_image_answer:
    presence, abnormality, level, and with attribute_heads view, type and location); a question
    no head answers keeps its type's grammar. None when the model decodes in the plain grammar."""
    import regex

    from assets.diffvqa.answer_patterns import answer_pattern, change_set_pattern
    from assets.diffvqa.vocabulary import DIFFERENCE_QUESTION
    from models.finding_heads import predicted_changes, single_image_answer

    if not getattr(model.cfg, "decode_with_heads", False) or feats.findings is None:
        return None
    fits = None
    if tokenizer is not None and max_new_tokens is not None:
        from assets.diffvqa.grammar import compose_answer
        from models.constrained import greedy_token_count

        # the answer as a forced closing would spell it, plus eos, within the budget
        def fits(cs) -> bool:
            return greedy_token_count(tokenizer, compose_answer(cs)) + 2 <= max_new_tokens
    changes: dict[int, object] = {}
    out = []
    for q, (question, qtype) in enumerate(zip(questions, types)):
        i = int(pair_index[q])
        if qtype != "difference":
            answer = single_image_answer(feats.findings, i, question, qtype)
            out.append(answer_pattern(qtype) if answer is None else regex.compile(regex.escape(answer)))
            continue
        if i not in changes:
            changes[i] = predicted_changes(feats.findings, i, fits)
        out.append(change_set_pattern(changes[i], area_question=question != DIFFERENCE_QUESTION))
    return out


@torch.no_grad()
def predict(model, batches: Iterable[PairBatch], tokenizer, device: torch.device | str,
            num_beams: int = 1, constrained: bool = True) -> list[dict]:
    """model: a bare ReAl (not DDP-wrapped). One image-encoder pass per pair, as in training.
    At most max_answer_len - 1 answer tokens: training answers are that long plus their eos.
    constrained: decode inside the answer grammar of each question's type."""
    from assets.diffvqa.answer_patterns import question_type_of

    max_new_tokens = model.cfg.max_answer_len - 1
    was_training = model.training
    model.eval()
    records: list[dict] = []
    for batch in batches:
        batch = batch.to(device)
        feats = model.encode_pairs(batch.main, batch.ref, batch.residual)
        processor = None
        if constrained:
            types = batch.question_types or [question_type_of(q) for q in batch.questions]
            patterns = head_patterns(model, feats, batch.pair_index, batch.questions, types,
                                     tokenizer, max_new_tokens)
            processor = grammar_processor(tokenizer, types, num_beams, max_new_tokens, patterns)
        outs = model.generate(feats, batch.pair_index, batch.question_ids, batch.question_mask,
                              max_new_tokens=max_new_tokens, num_beams=num_beams,
                              logits_processor=processor)
        for q, ids in enumerate(outs):
            records.append({
                "pair_id": batch.pair_ids[int(batch.pair_index[q])],
                "question": batch.questions[q],
                "answer": batch.answers[q],
                "question_type": (batch.question_types[q] if batch.question_types
                                  else question_type_of(batch.questions[q])),
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
                    batch.answer_ids, batch.answer_mask, batch.finding_targets)
        q = batch.n_questions
        for k in LOSS_KEYS:
            totals[k] = totals.get(k, 0.0) + float(out[k]) * q
        n += q
    model.train(was_training)
    return {k: v / max(n, 1) for k, v in totals.items()}
