"""Decoding: the cached greedy path equals step-by-step argmax without a cache; beam search with
one beam equals greedy; with enough beams it equals exhaustive search; outputs are valid.
`python -m pytest tests/models/test_generate.py`"""

import itertools

import torch
import torch.nn.functional as F

from models.config import ModelConfig
from models.generate import beam_search, greedy
from models.model import ReAl

PAD, BOS, EOS = 0, 1, 2


def tiny_model(vocab_size: int, seed: int = 0) -> ReAl:
    cfg = ModelConfig(backbone="tiny", image_size=32, n_queries=2, n_embd=32, n_layer=2, n_head=2,
                      vocab_size=vocab_size, max_question_len=8, max_answer_len=12, dropout=0.0)
    torch.manual_seed(seed)
    return ReAl(cfg, PAD, BOS, EOS).eval()


def prompt(model: ReAl, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    S, V = model.cfg.image_size, model.cfg.vocab_size
    main, ref = torch.rand(2, 1, S, S, generator=g), torch.rand(2, 1, S, S, generator=g)
    feats = model.encode_pairs(main, ref, main - ref)
    q = torch.randint(3, V, (3, 5), generator=g)
    qm = torch.ones_like(q)
    qm[1, 3:] = 0  # padded question: positions must still line up
    return model._prompt(feats, torch.tensor([0, 1, 1]), q, qm)


def next_logp(model: ReAl, emb, mask, tokens: list[list[int]]):
    """Log-probs after each row's tokens, from a full pass without any cache."""
    wte = model.gpt.transformer.wte
    t = torch.tensor(tokens, dtype=torch.long).view(len(tokens), -1)
    e = torch.cat([emb, wte(t)], dim=1)
    m = torch.cat([mask, torch.ones_like(t)], dim=1)
    pos = (m.cumsum(1) - 1).clamp(min=0)
    h = model.gpt.transformer(inputs_embeds=e, attention_mask=m, position_ids=pos).last_hidden_state
    logits = model.gpt.lm_head(h[:, -1]).float()
    logits[:, [BOS, PAD]] = float("-inf")
    return F.log_softmax(logits, dim=-1)


@torch.no_grad()
def test_cached_greedy_equals_uncached_argmax():
    model = tiny_model(vocab_size=40)
    emb, mask = prompt(model)
    got = greedy(model.gpt, emb, mask, EOS, max_new_tokens=8, banned=(BOS, PAD))
    for i, seq in enumerate(got):
        tokens = []
        for _ in range(8):
            nxt = int(next_logp(model, emb[i:i + 1], mask[i:i + 1], [tokens]).argmax())
            if nxt == EOS:
                break
            tokens.append(nxt)
        assert seq == tokens


@torch.no_grad()
def test_one_beam_equals_greedy_and_many_beams_are_valid():
    model = tiny_model(vocab_size=40)
    emb, mask = prompt(model)
    g = greedy(model.gpt, emb, mask, EOS, 10, banned=(BOS, PAD))
    assert beam_search(model.gpt, emb, mask, EOS, 10, num_beams=1, banned=(BOS, PAD)) == g
    for beams in (2, 4):
        out = beam_search(model.gpt, emb, mask, EOS, 10, num_beams=beams, banned=(BOS, PAD))
        assert len(out) == 3
        for seq in out:
            assert len(seq) <= 10 and all(3 <= t < 40 for t in seq)  # no bos/pad/eos inside


@torch.no_grad()
def test_enough_beams_is_exhaustive_search():
    # vocabulary of 6 (3 specials + 3 words) and 2 new tokens: 36 beams keep every sequence,
    # so beam search must return the best of all of them under its length-normalised score
    V, T = 6, 2
    model = tiny_model(vocab_size=V, seed=1)
    emb, mask = prompt(model, seed=1)
    got = beam_search(model.gpt, emb, mask, EOS, T, num_beams=V * V, banned=(BOS, PAD))
    words = range(3, V)
    candidates = [[EOS]] + [[a, EOS] for a in words] + [[a, b] for a, b in itertools.product(words, words)]
    for i in range(emb.shape[0]):
        def score(seq):
            lp = sum(float(next_logp(model, emb[i:i + 1], mask[i:i + 1], [seq[:t]])[0, seq[t]])
                     for t in range(len(seq)))
            return lp / len(seq)  # length counts the eos, as in beam_search
        best = max(candidates, key=score)
        assert got[i] == [t for t in best if t != EOS]


@torch.no_grad()
def test_longest_question_and_answer_fit_the_position_table():
    # an untrained model rarely says eos, so it runs to max_new_tokens = max_answer_len
    model = tiny_model(vocab_size=40)
    S, Lq = model.cfg.image_size, model.cfg.max_question_len
    main = torch.rand(1, 1, S, S)
    feats = model.encode_pairs(main, main, main * 0)
    q = torch.randint(3, 40, (1, Lq))
    for beams in (1, 2):
        out = model.generate(feats, torch.tensor([0]), q, torch.ones_like(q),
                             max_new_tokens=model.cfg.max_answer_len, num_beams=beams)
        assert len(out[0]) <= model.cfg.max_answer_len
