"""Greedy and beam-search decoding over a GPT-2 fed with prompt embeddings, with a KV cache.

The prompt (image tokens, question, bos) is run once; each later step feeds one token. Positions
follow the attention mask (cumsum − 1), exactly as in training, so question padding never shifts
them. Returned sequences stop before the first eos."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _step(gpt, emb, mask, cache, banned):
    """Log-probs of the next token after `emb` (the new positions only) and the updated cache.
    `banned` ids (bos, pad) never occur inside an answer, so they are never generated."""
    pos = (mask.long().cumsum(dim=1) - 1).clamp(min=0)[:, -emb.shape[1]:]
    # the cache is the second positional argument: `past_key_values` in transformers 4,
    # `cache` in 5 (the keyword was renamed), so no keyword works for both
    out = gpt.transformer(None, cache, attention_mask=mask, position_ids=pos, inputs_embeds=emb,
                          use_cache=True)
    cache = out.cache if hasattr(out, "cache") else out.past_key_values
    logits = gpt.lm_head(out.last_hidden_state[:, -1])  # (N, V)
    logits = logits.float().index_fill(1, banned, float("-inf"))
    return F.log_softmax(logits, dim=-1), cache


def _trim(seqs: torch.Tensor, eos_id: int) -> list[list[int]]:
    out = []
    for row in seqs.tolist():
        out.append(row[: row.index(eos_id)] if eos_id in row else row)
    return out


@torch.no_grad()
def greedy(gpt, emb, mask, eos_id: int, max_new_tokens: int, banned: tuple[int, ...] = (),
           logits_processor=None) -> list[list[int]]:
    """emb (Q, T, D) prompt embeddings, mask (Q, T). logits_processor: a transformers
    LogitsProcessor called with the answer tokens so far (models/constrained.py)."""
    banned = torch.tensor(banned, dtype=torch.long, device=emb.device)
    Q = emb.shape[0]
    wte = gpt.transformer.wte
    logp, cache = _step(gpt, emb, mask, None, banned)
    done = torch.zeros(Q, dtype=torch.bool, device=emb.device)
    tokens = []
    for step in range(max_new_tokens):
        if logits_processor is not None:
            so_far = torch.stack(tokens, dim=1) if tokens else emb.new_zeros((Q, 0), dtype=torch.long)
            logp = logits_processor(so_far, logp)
        nxt = logp.argmax(dim=-1).masked_fill(done, eos_id)  # (Q,)
        tokens.append(nxt)
        done |= nxt == eos_id
        if done.all() or step == max_new_tokens - 1:  # no feed after the last token: its
            break                                      # position may be past the table
        mask = torch.cat([mask, mask.new_ones(Q, 1)], dim=1)
        logp, cache = _step(gpt, wte(nxt)[:, None], mask, cache, banned)
    return _trim(torch.stack(tokens, dim=1), eos_id)


@torch.no_grad()
def beam_search(gpt, emb, mask, eos_id: int, max_new_tokens: int, num_beams: int,
                banned: tuple[int, ...] = (), length_penalty: float = 1.0,
                logits_processor=None) -> list[list[int]]:
    """Keep the num_beams best partial answers per question by summed log-prob; a finished beam
    keeps its score and can only be extended by eos (log-prob 0). The winner maximises
    score / length**length_penalty (HF's convention), length counting the eos."""
    Q, T, D = emb.shape
    B, device = num_beams, emb.device
    banned = torch.tensor(banned, dtype=torch.long, device=device)
    wte = gpt.transformer.wte
    # every question's prompt repeated B times, rows q*B .. q*B+B-1
    emb, mask = emb.repeat_interleave(B, dim=0), mask.repeat_interleave(B, dim=0)
    logp, cache = _step(gpt, emb, mask, None, banned)
    V = logp.shape[-1]
    # only beam 0 is live at the start, or the B identical beams would fill the top B
    scores = torch.full((Q, B), float("-inf"), device=device)
    scores[:, 0] = 0.0
    done = torch.zeros(Q, B, dtype=torch.bool, device=device)
    lengths = torch.zeros(Q, B, device=device)
    seqs = torch.zeros(Q, B, 0, dtype=torch.long, device=device)
    eos_only = torch.full((V,), float("-inf"), device=device)
    eos_only[eos_id] = 0.0
    rows = torch.arange(Q, device=device)[:, None]  # (Q, 1)
    for step in range(max_new_tokens):
        if logits_processor is not None:
            logp = logits_processor(seqs.view(Q * B, -1), logp)
        logp = logp.view(Q, B, V).where(~done[..., None], eos_only)  # (Q, B, V)
        cand = (scores[..., None] + logp).view(Q, B * V)
        scores, idx = cand.topk(B, dim=1)  # (Q, B)
        beam, tok = idx // V, idx % V
        lengths = lengths[rows, beam] + (~done[rows, beam]).float()
        done = done[rows, beam] | (tok == eos_id)
        seqs = torch.cat([seqs[rows, beam], tok[..., None]], dim=2)  # (Q, B, t)
        if done.all() or step == max_new_tokens - 1:
            break
        cache.reorder_cache((rows * B + beam).view(-1))
        mask = torch.cat([mask, mask.new_ones(Q * B, 1)], dim=1)
        logp, cache = _step(gpt, wte(tok.view(-1))[:, None], mask, cache, banned)
    best = (scores / lengths.clamp(min=1) ** length_penalty).argmax(dim=1)  # (Q,)
    return _trim(seqs[rows[:, 0], best], eos_id)
