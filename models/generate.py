"""Greedy and beam-search decoding of answers: transformers' own `generate` on the GPT-2, fed the
prompt embeddings (image tokens, finding tokens, question, bos) with `inputs_embeds`.

GPT-2's generate derives positions from the attention mask (cumsum − 1), exactly as training
does, so question padding never shifts them; bos and pad never occur inside an answer and are
suppressed; a grammar LogitsProcessor (models/constrained.py) sees the answer tokens so far.
Beam search keeps HF's length normalisation (score / length, the eos counted) and searches to
the end (early_stopping="never"), so enough beams give the exhaustive answer
(tests/models/test_generate.py checks greedy against step-by-step argmax and wide beams against
exhaustive search). Returned sequences stop before the first eos."""

from __future__ import annotations

import torch
from transformers import LogitsProcessorList


def _trim(seqs: torch.Tensor, eos_id: int) -> list[list[int]]:
    out = []
    for row in seqs.tolist():
        out.append(row[: row.index(eos_id)] if eos_id in row else row)
    return out


@torch.no_grad()
def generate_answers(gpt, emb, mask, eos_id: int, max_new_tokens: int, num_beams: int = 1,
                     banned: tuple[int, ...] = (), logits_processor=None) -> list[list[int]]:
    """emb (Q, T, D) prompt embeddings, mask (Q, T) -> each question's answer token ids."""
    out = gpt.generate(
        inputs_embeds=emb, attention_mask=mask, max_new_tokens=max_new_tokens, num_beams=num_beams,
        do_sample=False, eos_token_id=eos_id, pad_token_id=eos_id, suppress_tokens=list(banned) or None,
        early_stopping="never" if num_beams > 1 else False, length_penalty=1.0,
        logits_processor=LogitsProcessorList([logits_processor] if logits_processor is not None else []))
    return _trim(out, eos_id)


def greedy(gpt, emb, mask, eos_id: int, max_new_tokens: int, banned: tuple[int, ...] = (),
           logits_processor=None) -> list[list[int]]:
    return generate_answers(gpt, emb, mask, eos_id, max_new_tokens, 1, banned, logits_processor)


def beam_search(gpt, emb, mask, eos_id: int, max_new_tokens: int, num_beams: int,
                banned: tuple[int, ...] = (), logits_processor=None) -> list[list[int]]:
    return generate_answers(gpt, emb, mask, eos_id, max_new_tokens, num_beams, banned, logits_processor)
