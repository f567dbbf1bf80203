"""Byte-level BPE trained on the training questions and answers, wrapped as a transformers
tokenizer so it saves and loads with the model (`save_pretrained` / `load_tokenizer`).

Byte-level so any string round-trips exactly: answers end with ". " and the trailing space is
part of the grammar (assets/diffvqa/grammar.py). No hub access: everything is built here."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return _wrap(tok)


def _wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    # clean_up_tokenization_spaces would rewrite " ." and eat meaningful spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS,
                                   eos_token=EOS, clean_up_tokenization_spaces=False)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    path = Path(path)
    if not (path / "tokenizer.json").exists():
        raise FileNotFoundError(f"{path}: no tokenizer.json (save one with save_pretrained)")
    try:
        tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    except Exception as e:  # the tokenizers library raises a bare Exception for a malformed file
        raise ValueError(f"{path / 'tokenizer.json'}: not a tokenizer ({e})") from None
    return _wrap(tok)


def encode_questions(tok: PreTrainedTokenizerFast, texts: list[str], max_len: int):
    """(ids, mask), each (N, L) with L = the longest question (≤ max_len), right-padded."""
    return _pad([tok.encode(t, add_special_tokens=False)[:max_len] for t in texts], tok.pad_token_id)


def encode_answers(tok: PreTrainedTokenizerFast, texts: list[str], max_len: int):
    """(ids, mask): answer tokens + eos, truncated so the eos always fits in max_len."""
    seqs = [tok.encode(t, add_special_tokens=False)[: max_len - 1] + [tok.eos_token_id] for t in texts]
    return _pad(seqs, tok.pad_token_id)


def decode(tok: PreTrainedTokenizerFast, ids: list[list[int]]) -> list[str]:
    return tok.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def _pad(seqs: list[list[int]], pad_id: int):
    L = max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask
