"""The answer vocabulary (the 30 finding names, the 17 level words) as this tokenizer's ids, and
the decoder's embedding of a word spelled by several tokens. Shared by the finding tokens
(models/finding_heads.py) and AMiF's text side and knowledge bank (models/amif.py)."""

from __future__ import annotations

import torch
import torch.nn as nn


def finding_name_ids(tokenizer) -> list[list[int]]:
    """The 30 finding names as this tokenizer's ids, as they appear inside an answer (after a space)."""
    from assets.diffvqa.vocabulary import FINDINGS

    return [tokenizer.encode(" " + f, add_special_tokens=False) for f in FINDINGS]


def vocabulary_ids(tokenizer) -> dict[str, list[list[int]]]:
    """ReAl's keyword arguments for the answer vocabulary: finding names and level words as ids."""
    from assets.diffvqa.vocabulary import LEVELS

    return {"finding_name_ids": finding_name_ids(tokenizer),
            "level_name_ids": [tokenizer.encode(" " + lv, add_special_tokens=False) for lv in LEVELS]}


def mean_word_embeddings(wte: nn.Embedding, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(W, L) token ids of W words (mask marks real tokens) -> (W, D) mean embedding per word."""
    emb = wte(ids) * mask[..., None]
    return emb.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)


def padded_ids(words: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists of W words -> (W, L) ids padded with 0 and the (W, L) mask of real tokens."""
    width = max((len(w) for w in words), default=1) or 1
    ids, mask = torch.zeros(len(words), width, dtype=torch.long), torch.zeros(len(words), width)
    for i, seq in enumerate(words):
        ids[i, :len(seq)], mask[i, :len(seq)] = torch.tensor(seq, dtype=torch.long), 1.0
    return ids, mask
