"""Decoding that never leaves the answer grammar: a transformers LogitsProcessor that keeps, for
each sequence, only next tokens whose text can still become a valid answer of its question type
(assets/diffvqa/answer_patterns.py), and allows eos only once the text is a whole answer.

Checking all V tokens at every step would cost V regex calls per sequence; instead the tokens are
visited best-first and the search stops at the first `keep` valid ones (1 for greedy, the beam
width for beam search): a trained model's first choice is nearly always valid, so a step costs a
sort and one or two partial matches. An untrained model still answers a well-formed sentence —
the grammar picks, the logits only rank."""

from __future__ import annotations

import functools

import torch
from transformers import LogitsProcessor

from assets.diffvqa.answer_patterns import answer_pattern, shortest_completion

NEG_INF = float("-inf")
# In the last CLOSING_ZONE tokens of the budget, an answer whose shortest completion needs
# nearly all that is left follows it (MARGIN absorbs the few tokens one free step can add).
CLOSING_ZONE, MARGIN = 40, 8


@functools.lru_cache(maxsize=4)
def _token_texts(tokenizer) -> tuple[str, ...]:
    return tuple(tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False)
                 for i in range(len(tokenizer)))


@functools.lru_cache(maxsize=4)
def _pieces(tokenizer) -> tuple[dict[str, int], int]:
    """text -> the lowest id of a non-special token spelling it, and the longest such text: a
    longest-first split then costs one lookup per candidate length, not a scan of the vocabulary."""
    special = set(tokenizer.all_special_ids)
    by_text: dict[str, int] = {}
    for tok, text in enumerate(_token_texts(tokenizer)):
        if tok not in special and text:
            by_text.setdefault(text, tok)
    return by_text, max(map(len, by_text), default=1)


def _longest_token(tokenizer, tail: str) -> int | None:
    """The token covering most of `tail` from its start (byte-level BPE has every single
    character, so one always exists; None otherwise)."""
    by_text, longest = _pieces(tokenizer)
    for n in range(min(longest, len(tail)), 0, -1):
        if (tok := by_text.get(tail[:n])) is not None:
            return tok
    return None


def greedy_token_count(tokenizer, text: str) -> int:
    """Tokens a forced closing spends on `text` (longest matching token first): the measure by
    which a head-guided answer is kept within the budget, and by which closing starts in time."""
    texts = _token_texts(tokenizer)
    n, rest = 0, text
    while rest:
        tok = _longest_token(tokenizer, rest)
        rest, n = rest[len(texts[tok]) if tok is not None else 1:], n + 1
    return n


class GrammarLogitsProcessor(LogitsProcessor):
    """input_ids: (N, t) the answer tokens generated so far (no prompt); scores (N, V)."""

    def __init__(self, tokenizer, question_types: list[str] | None = None, keep: int = 1,
                 max_new_tokens: int | None = None, patterns: list | None = None,
                 closing_zones: list[int] | None = None):
        """One row per sequence: its question type's language, or an explicit compiled pattern
        (e.g. assets.diffvqa.answer_patterns.change_set_pattern: exactly one change set)."""
        self.tokenizer = tokenizer
        self.texts = _token_texts(tokenizer)
        self.special = set(tokenizer.all_special_ids)
        self.eos = tokenizer.eos_token_id
        self.patterns = patterns if patterns is not None else [answer_pattern(t) for t in question_types or []]
        self.keep = keep
        # near the end of the budget a complete answer stops rather than start one more item,
        # and an incomplete one is steered along its shortest completion (cached per row)
        self.max_new_tokens = max_new_tokens
        self.closing: dict[int, str] = {}
        # per row: from how many tokens left on the budget is checked (a small, exact pattern can
        # afford the check at every step; the whole grammar only near the end)
        self.zones = closing_zones or [CLOSING_ZONE] * len(self.patterns)

    def _allowed(self, row: int, prefix: str, scores: torch.Tensor) -> list[int]:
        pattern = self.patterns[row]
        found: list[int] = []
        for tok in torch.argsort(scores, descending=True).tolist():
            if scores[tok] == NEG_INF:
                break
            if tok == self.eos:
                ok = pattern.fullmatch(prefix) is not None
            elif tok in self.special:
                ok = False
            else:
                ok = pattern.fullmatch(prefix + self.texts[tok], partial=True) is not None
            if ok:
                found.append(tok)
                if len(found) >= self.keep:
                    break
        return found

    def _completion(self, row: int, prefix: str) -> str | None:
        target = self.closing.get(row)
        if target is None or not target.startswith(prefix):
            tail = shortest_completion(self.patterns[row], prefix)
            if tail is None:
                return None
            target = self.closing[row] = prefix + tail
        return target[len(prefix):]

    def _must_close(self, row: int, prefix: str, left: int) -> bool:
        tail = self._completion(row, prefix)
        if not tail:
            return False
        return greedy_token_count(self.tokenizer, tail) + 1 >= left - MARGIN  # + 1: the eos

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = torch.full_like(scores, NEG_INF)
        for row in range(scores.shape[0]):
            ids = input_ids[row].tolist() if input_ids.shape[1] else []
            if self.eos in ids:  # finished: the decoder pads it with eos
                out[row, self.eos] = 0.0
                continue
            prefix = "".join(self.texts[i] for i in ids)
            left = self.max_new_tokens - len(ids) if self.max_new_tokens is not None else None
            if left is not None and left <= 12 and self.patterns[row].fullmatch(prefix) is not None:
                allowed = [self.eos]
            elif left is not None and left <= self.zones[row] and self._must_close(row, prefix, left):
                tok = _longest_token(self.tokenizer, self._completion(row, prefix))
                allowed = [tok if tok is not None else self.eos]
            else:
                allowed = self._allowed(row, prefix, scores[row])
            if not allowed:  # nothing ranked can continue: end here rather than emit garbage
                allowed = [self.eos]
            out[row, allowed] = scores[row, allowed]
        return out
